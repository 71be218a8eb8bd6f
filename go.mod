module github.com/msrpscope/msrpscope

go 1.26

require go.yaml.in/yaml/v3 v3.0.6

require (
	github.com/expr-lang/expr v1.17.8 // indirect
	github.com/google/gopacket v1.1.19 // indirect
)
