// Package deploy holds the tests of what ships beside the binary: the
// container images, docker-compose.yml, Caddyfile.example, the Prometheus and
// Grafana files, the CI workflow and the README. None of them needs Docker.
package deploy
