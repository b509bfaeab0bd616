// Package cli holds strata's subcommands (cobra). Run is the whole program behind a thin main,
// so start-up is unit-tested.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/telemetry"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3"; otherwise the
// module version from the build info, or "dev".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// globals are the flags every subcommand takes.
type globals struct {
	configFile string
	dataDir    string
	logLevel   string
	logFormat  string
	stdout     io.Writer
	stderr     io.Writer
}

// loadConfig reads --config with --data-dir and extra applied over it.
func (g *globals) loadConfig(extra ...func(*config.Config)) (*config.Config, error) {
	overrides := []func(*config.Config){func(c *config.Config) {
		if g.dataDir != "" {
			c.DataDir = g.dataDir
		}
	}}
	return config.Load(g.configFile, append(overrides, extra...)...)
}

func (g *globals) logger() (*slog.Logger, error) {
	return telemetry.NewLogger(g.stderr, g.logLevel, g.logFormat)
}

// Run runs strata with args (without the program name). Output goes to stdout, logs and errors
// to stderr. It returns when the command is done or, for serve, when ctx is cancelled.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "strata",
		Short:         "Strata: an LLM inference stack (platform, gateway, router, engine) in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "YAML config file (default: embedded defaults)")
	pf.StringVar(&g.dataDir, "data-dir", "", "data directory (default: $XDG_DATA_HOME/strata or ~/.local/share/strata)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintf(stdout, "strata %s (%s %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return err
			},
		},
		serveCmd(g), simMultiCmd(g), keysCmd(g), tenantsCmd(g), usageCmd(g), replayCmd(g),
		billCmd(g), pricesCmd(g), policyCmd(g), auditCmd(g), adminTokensCmd(g),
	)
	err := root.ExecuteContext(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "strata: %s\n", strings.TrimSpace(err.Error()))
		return err
	}
	return nil
}
