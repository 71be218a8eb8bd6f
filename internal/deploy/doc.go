// Package deploy holds the deployment files (systemd unit, the compose configurations of
// msrpscope, Prometheus and Homer); its tests check them, docker-compose.yml and the Dockerfile.
package deploy
