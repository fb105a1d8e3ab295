// Command dockerfilecheck parses Dockerfiles with BuildKit's own parser and
// instruction decoder, with its build checks on (those `docker build --check`
// runs while parsing), and fails on a syntax error, a malformed instruction or
// any check's warning — a Dockerfile linted without a Docker engine.
//
//	dockerfilecheck FILE...
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfilecheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range os.Args[1:] {
		problems, stages, err := check(file)
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "dockerfilecheck: %s: invalid: %v\n", file, err)
			failed = true
		case len(problems) > 0:
			for _, p := range problems {
				fmt.Fprintf(os.Stderr, "dockerfilecheck: %s: %s\n", file, p)
			}
			failed = true
		default:
			fmt.Printf("dockerfilecheck: %s: valid, %d stages: %s\n", file, len(stages), strings.Join(stages, " "))
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check parses one Dockerfile and returns the build checks' warnings and the
// names of its stages ("-" for an unnamed one).
func check(file string) ([]string, []string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	var problems []string
	warn := func(rule, description, url, msg string, location []parser.Range) {
		line := 0
		if len(location) > 0 {
			line = location[0].Start.Line
		}
		problems = append(problems, fmt.Sprintf("line %d: %s: %s (%s)", line, rule, msg, url))
	}
	ast, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, nil, err
	}
	for _, w := range ast.Warnings {
		problems = append(problems, fmt.Sprintf("line %d: %s", w.Location.Start.Line, w.Short))
	}
	lint := linter.New(&linter.Config{Warn: warn})
	stages, _, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(stages))
	for _, s := range stages {
		name := s.Name
		if name == "" {
			name = "-"
		}
		names = append(names, name)
	}
	return problems, names, nil
}
