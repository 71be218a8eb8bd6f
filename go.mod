module github.com/msrpscope/msrpscope

go 1.26.0

require (
	github.com/expr-lang/expr v1.17.8
	github.com/google/gopacket v1.1.19
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/net v0.62.0
)

require golang.org/x/sys v0.49.0 // indirect
