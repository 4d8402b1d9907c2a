package main

import (
	"fmt"
	"os"
)

// runToken is a placeholder until its owner lands it.
func runToken(args []string) int {
	fmt.Fprintln(os.Stderr, "not implemented yet")
	return 1
}
