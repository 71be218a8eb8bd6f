// Package promtest runs every Prometheus panel of msrpscope's relay-health dashboard against a
// real Prometheus scraping a running msrpscope (its tests start both on loopback).
package promtest
