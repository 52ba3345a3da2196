module github.com/keypool/keypool

go 1.26.8

require (
	github.com/sethvargo/go-retry v0.5.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
