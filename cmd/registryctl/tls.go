package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/validate"
)

// The files "tls ca create" writes and "tls cert create" reads.
const (
	caFile    = "registry-agent-ca.pem"
	caKeyFile = "registry-agent-ca-key.pem"
)

// tlsCmd makes a development CA and node and client certificates, like
// consul tls. It needs no cluster.
func (c *cli) tlsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create a CA and node and client certificates (PEM files) for TLS",
		Long: `tls creates a CA and certificates signed by it, as PEM files with keys of mode 0600:
a node's (server) certificate names server.registry, which nodes require of each
other; a client's names client.registry and cannot serve or join the cluster.`,
		// No endpoints needed: skip the root's checks.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
	}
	ca := &cobra.Command{Use: "ca", Short: "Create a CA"}
	ca.AddCommand(c.tlsCACreateCmd())
	cert := &cobra.Command{Use: "cert", Short: "Create a node or client certificate"}
	cert.AddCommand(c.tlsCertCreateCmd())
	cmd.AddCommand(ca, cert)
	return cmd
}

func (c *cli) tlsCACreateCmd() *cobra.Command {
	var dir string
	var days int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a CA: " + caFile + " and " + caKeyFile,
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			pair, err := tlsutil.CreateCA(tlsutil.CAOptions{Days: days})
			if err != nil {
				return err
			}
			return c.saveTLS(pair, dir, caFile, caKeyFile)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	cmd.Flags().IntVar(&days, "days", tlsutil.DefaultCADays, "days the CA is valid")
	return cmd
}

func (c *cli) tlsCertCreateCmd() *cobra.Command {
	var (
		server, client bool
		nodeID, name   string
		dnsNames, ips  []string
		dir, ca, caKey string
		days           int
	)
	cmd := &cobra.Command{
		Use:   "create (--server --node ID [--dns NAME]... [--ip IP]... | --client [--name NAME])",
		Short: "Create a node's (--server) or a client's certificate, signed by the CA",
		Example: `  registryctl tls cert create --server --node n1 --dns n1.example.internal --ip 10.0.0.1
  registryctl tls cert create --client --name deployer`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if server == client {
				return errors.New("give one of --server and --client")
			}
			opts := tlsutil.CertOptions{Server: server, DNSNames: dnsNames, Days: days}
			var certFile string
			if server {
				if err := validate.Name("--node", nodeID); err != nil {
					return err
				}
				opts.CommonName, certFile = nodeID, "server-"+nodeID
				for _, s := range ips {
					ip := net.ParseIP(s)
					if ip == nil {
						return fmt.Errorf("--ip %q: not an IP address", s)
					}
					opts.IPs = append(opts.IPs, ip)
				}
			} else {
				if nodeID != "" || len(dnsNames) > 0 || len(ips) > 0 {
					return errors.New("--node, --dns and --ip are for --server certificates")
				}
				opts.CommonName, certFile = "client", "client"
				if name != "" {
					if err := validate.Name("--name", name); err != nil {
						return err
					}
					opts.CommonName, certFile = name, "client-"+name
				}
			}
			caPair, err := tlsutil.ReadPair(or(ca, filepath.Join(dir, caFile)), or(caKey, filepath.Join(dir, caKeyFile)))
			if err != nil {
				return fail(err)
			}
			pair, err := tlsutil.CreateCert(caPair, opts)
			if err != nil {
				return fail(err)
			}
			return c.saveTLS(pair, dir, certFile+".pem", certFile+"-key.pem")
		},
	}
	f := cmd.Flags()
	f.BoolVar(&server, "server", false, "a node's certificate (names "+tlsutil.ServerName+", localhost and 127.0.0.1)")
	f.BoolVar(&client, "client", false, "a client's certificate (names "+tlsutil.ClientName+")")
	f.StringVar(&nodeID, "node", "", "the node's id (--server): the certificate's name and file server-ID.pem")
	f.StringSliceVar(&dnsNames, "dns", nil, "another DNS name of the node (--server; repeatable)")
	f.StringSliceVar(&ips, "ip", nil, "another IP address of the node (--server; repeatable)")
	f.StringVar(&name, "name", "", "the client's name (--client): file client-NAME.pem (default client.pem)")
	f.StringVar(&dir, "dir", ".", "directory to write the files to (and to read the CA from)")
	f.StringVar(&ca, "ca", "", "the CA certificate (default DIR/"+caFile+")")
	f.StringVar(&caKey, "ca-key", "", "the CA key (default DIR/"+caKeyFile+")")
	f.IntVar(&days, "days", tlsutil.DefaultCertDays, "days the certificate is valid (at most the CA's remaining life)")
	return cmd
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// saveTLS writes pair to dir/certName and dir/keyName (0600) and says so.
func (c *cli) saveTLS(pair tlsutil.PEMPair, dir, certName, keyName string) error {
	certPath, keyPath := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := pair.WriteFiles(certPath, keyPath); err != nil {
		return fail(err)
	}
	fmt.Fprintf(c.stdout, "==> Saved %s\n==> Saved %s\n", certPath, keyPath)
	return nil
}

// tlsFiles are the global --cacert, --cert and --key.
type tlsFiles struct{ ca, cert, key string }

// The environment variables of --cacert, --cert and --key.
const (
	caCertEnv = "REGISTRY_CACERT"
	certEnv   = "REGISTRY_CERT"
	keyEnv    = "REGISTRY_KEY"
)

func (f *tlsFiles) addFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&f.ca, "cacert", "", "CA certificate (PEM) to verify the nodes with; turns TLS on (env "+caCertEnv+")")
	pf.StringVar(&f.cert, "cert", "", "client certificate (PEM; from registryctl tls cert create --client) for nodes that require one (env "+certEnv+")")
	pf.StringVar(&f.key, "key", "", "the key of --cert (env "+keyEnv+")")
}

// setupTLS reads the TLS flags or their environment variables and sets the
// credentials of the connections: TLS if a CA or certificate is given,
// plaintext otherwise.
func (c *cli) setupTLS(cmd *cobra.Command) error {
	f := &c.tlsFiles
	for _, v := range []struct {
		p         *string
		flag, env string
	}{{&f.ca, "cacert", caCertEnv}, {&f.cert, "cert", certEnv}, {&f.key, "key", keyEnv}} {
		if e := os.Getenv(v.env); e != "" && !cmd.Flags().Changed(v.flag) {
			*v.p = e
		}
	}
	if f.ca == "" && f.cert == "" && f.key == "" {
		c.creds = insecure.NewCredentials()
		return nil
	}
	cfg, err := tlsutil.ClientConfig(f.ca, f.cert, f.key)
	if err != nil {
		return err
	}
	c.creds = credentials.NewTLS(cfg)
	return nil
}
