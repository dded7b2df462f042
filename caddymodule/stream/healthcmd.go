package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sdr-health",
		Usage: "[--timeout <duration>] [<url>...]",
		Short: "Checks that health URLs answer 2xx (the container health check)",
		Long: `
GETs each URL and exits 0 when every one answers with a 2xx status within
--timeout, 1 otherwise (the log says which did not, and why). Without a URL
it checks those in $HEALTHCHECK_URL (space-separated), which the image sets.

It is the container health check of the sdr-caddy image, which carries no
curl or wget: the transport site's /health answers 503 while the ring reader
is stuck, which makes the container unhealthy.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().Duration("timeout", 3*time.Second, "how long each URL may take to answer")
			sdrcmd.Strict(cmd, cobra.ArbitraryArgs)
			cmd.PreRunE = func(c *cobra.Command, args []string) error {
				if len(healthURLs(args)) == 0 {
					return sdrcmd.UsageError(c, errors.New("no URL to check: give one, or set HEALTHCHECK_URL"))
				}
				for _, u := range healthURLs(args) {
					if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
						return sdrcmd.UsageError(c, fmt.Errorf("%q is not an http:// or https:// URL", u))
					}
				}
				return nil
			}
			cmd.RunE = sdrcmd.Run(runHealth)
		},
	})
}

// healthURLs returns the URLs given, or else those of $HEALTHCHECK_URL.
func healthURLs(args []string) []string {
	if len(args) > 0 {
		return args
	}
	return strings.Fields(os.Getenv("HEALTHCHECK_URL"))
}

func runHealth(cmd *cobra.Command, args []string) (int, error) {
	timeout, err := cmd.Flags().GetDuration("timeout")
	if err != nil {
		return exitFailed, err
	}
	client := &http.Client{Timeout: timeout}
	var errs []error
	for _, u := range healthURLs(args) {
		if err := checkHealth(cmd.Context(), client, u); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return exitFailed, err
	}
	return 0, nil
}

// checkHealth GETs u and wants a 2xx answer.
func checkHealth(ctx context.Context, client *http.Client, u string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("health %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
