// Package deploy holds the monitoring assets: the Grafana dashboard in
// grafana/ and the Prometheus alerting rules and example configuration in
// prometheus/. Its tests check them; the integration tests run them against
// a live cluster.
//
// Nothing here is compiled into the registry.
package deploy
