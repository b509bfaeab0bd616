package stack

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Layers talk only through the OpenAI HTTP contract (../shared/ARCHITECTURE.md): a layer package
// (including its tests) never imports another layer; only stack, cli and replay compose them.
func TestLayersDoNotImportEachOther(t *testing.T) {
	const mod = "github.com/strata-inference/strata/internal/"
	layers := []string{"platform", "gateway", "router", "engine", "fleet"}
	checked := 0
	for _, layer := range layers {
		root := filepath.Join("..", layer)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return nil //nolint:nilerr // a missing layer directory has nothing to check
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			require.NoError(t, err)
			checked++
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, other := range layers {
					if other != layer && (p == mod+other || strings.HasPrefix(p, mod+other+"/")) {
						t.Errorf("%s imports %s: layers meet only in internal/stack", path, p)
					}
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	require.Greater(t, checked, 10, "the walk found the layer packages")
}
