package main

import (
	"fmt"
	"os"
)

// runServe is a placeholder until its owner lands it.
func runServe(args []string) int {
	fmt.Fprintln(os.Stderr, "not implemented yet")
	return 1
}
