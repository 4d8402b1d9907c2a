package main

import (
	"fmt"
	"os"
)

// runBootstrapSecret is a placeholder until its owner lands it.
func runBootstrapSecret(args []string) int {
	fmt.Fprintln(os.Stderr, "not implemented yet")
	return 1
}
