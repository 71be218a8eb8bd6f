module github.com/msrpscope/msrpscope

go 1.26
