package replay

import (
	"fmt"
	"html"
	"io"
	"path"
	"path/filepath"
	"strings"
)

// WriteSVG draws results as an SVG image for docs: per policy, horizontal bars of TTFT p50, p90
// and p99 (seconds, one shared scale) and, on the right, the prefix-cache hit ratio against the
// ideal ratio (a tick). Plain SVG 1.1, no scripts or external fonts.
func WriteSVG(w io.Writer, title string, results []*Result) error {
	const (
		left, barH, gap, groupGap = 150.0, 12.0, 2.0, 14.0
		ttftW, hitX, hitW, top    = 400.0, 620.0, 160.0, 48.0
	)
	maxT := 0.0
	for _, r := range results {
		maxT = max(maxT, r.TTFT.P99)
	}
	if maxT == 0 {
		maxT = 1
	}
	groupH := 3*barH + 2*gap
	height := top + float64(len(results))*(groupH+groupGap) + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="820" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="38">TTFT (s): p50, p90, p99</text><text x="%.0f" y="38">prefix hit ratio (tick: ideal)</text>`+"\n", left, hitX)
	colors := []string{"#9ecae1", "#4292c6", "#08519c"}
	for i, r := range results {
		y := top + float64(i)*(groupH+groupGap)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+groupH/2+4, html.EscapeString(label(r.Policy)))
		for k, v := range []float64{r.TTFT.P50, r.TTFT.P90, r.TTFT.P99} {
			by := y + float64(k)*(barH+gap)
			bw := v / maxT * ttftW
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/><text x="%.1f" y="%.1f">%.2f</text>`+"\n",
				left, by, bw, barH, colors[k], left+bw+4, by+barH-2, v)
		}
		hy := y + barH + gap
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.0f" height="%.0f" fill="#eee"/>`, hitX, hy, hitW, barH)
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="#31a354"/>`, hitX, hy, r.HitRatio*hitW, barH)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black" stroke-width="2"/>`, hitX+r.IdealHitRatio*hitW, hitX+r.IdealHitRatio*hitW, hy-3, hy+barH+3)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f">%.3f</text>`+"\n", hitX+hitW+6, hy+barH-2, r.HitRatio)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// label is how a policy is named in tables and charts: a config file by its base name.
func label(policy string) string {
	if ext := path.Ext(policy); ext == ".yaml" || ext == ".yml" {
		return path.Base(filepath.ToSlash(policy))
	}
	return policy
}
