package sdrcaddyfile

import (
	"github.com/sdr-os/sdr-caddy/internal/origin"
)

// CommandTrust says which browser connections of sdr_stream and sdr_whep
// may command the robot (package origin). Both embed it, so that its
// fields sit beside the module's own in JSON, and build their policy with
// Policy: one rule for /stream/ws, its DataChannels and WHEP sessions.
type CommandTrust struct {
	// AllowedOrigins lists the browser origins (scheme://host[:port],
	// "*" wildcards allowed; "*" alone: any) trusted to send commands
	// besides the page's own host on any port, the host a proxy names in
	// X-Forwarded-Host, and loopback origins (SDR_ALLOWED_ORIGINS). Every
	// origin may connect and watch; the commands of a connection from
	// another origin are refused: a 0x04 command is answered `rejected`
	// ("origin ... not allowed"), a DataChannel message is dropped and
	// counted.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// AllowedHosts lists the names (host names, "*" wildcards as in
	// "*.example.com"; "*" alone: any) that a browser's Host header may
	// carry for its commands to be taken, besides IP addresses, localhost,
	// single-label names and *.local, *.ts.net, *.lan, *.home.arpa and
	// *.internal names (SDR_ALLOWED_HOSTS; Caddyfile.example adds the
	// configured site names). It guards against DNS rebinding: a page
	// whose own name was rebound to this machine's address has its
	// commands refused ("host ... not allowed"), and may still watch.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
}

// Policy checks the allowlists and returns their policy.
func (t CommandTrust) Policy() (*origin.Policy, error) {
	return origin.NewPolicy(t.AllowedOrigins, t.AllowedHosts...)
}

// ValidateTrust checks the allowlists as JSON may give them.
func (t CommandTrust) ValidateTrust() error {
	_, err := t.Policy()
	return err
}

// UnmarshalTrust reads args if they belong to one of the subdirectives of
// CommandTrust, and reports whether they did:
//
//	allowed_origins [<origin...>|*]
//	allowed_hosts   [<host...>|*]
//
// Either given without a value (an empty {$SDR_ALLOWED_ORIGINS:}) lists
// none.
func (t *CommandTrust) UnmarshalTrust(args Args) (bool, error) {
	switch args.name {
	case "allowed_origins":
		for _, a := range args.vals {
			if err := origin.Validate(a); err != nil {
				return true, args.d.Err(err.Error())
			}
		}
		t.AllowedOrigins = args.vals
	case "allowed_hosts":
		hosts, err := ParseHosts(args.d, args.vals)
		if err != nil {
			return true, err
		}
		t.AllowedHosts = hosts
	default:
		return false, nil
	}
	return true, nil
}
