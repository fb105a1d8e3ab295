// Command composecheck loads Compose files the way `docker compose` does and
// fails on anything the Compose specification or the loader's consistency
// checks reject, so a broken docker-compose.yml is caught on machines
// without a Docker engine.
//
//	composecheck [-env NAME=VALUE]... FILE...
//
// Besides the loader's own checks it verifies that every build context and
// Dockerfile exists: compose-go leaves that to build time.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

type envFlags []string

func (e *envFlags) String() string     { return strings.Join(*e, ",") }
func (e *envFlags) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var env envFlags
	flag.Var(&env, "env", "NAME=VALUE for interpolation (repeatable); the process environment is ignored")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-env NAME=VALUE]... FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	project, err := load(flag.Args(), env)
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %s: invalid: %v\n", strings.Join(flag.Args(), ", "), err)
		os.Exit(1)
	}
	if problems := checkBuilds(project); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "composecheck: %s\n", p)
		}
		os.Exit(1)
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("composecheck: %s: valid, %d services: %s\n",
		strings.Join(flag.Args(), ", "), len(names), strings.Join(names, " "))
}

// load reads the files with validation, interpolation and the consistency
// check on (the loader's defaults), and only the given variables, so the
// result does not depend on who runs it.
func load(files []string, env []string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions(files,
		cli.WithEnv(env),
		cli.WithConsistency(true),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

// checkBuilds reports build contexts and Dockerfiles that do not exist.
func checkBuilds(project *types.Project) []string {
	var problems []string
	for _, name := range project.ServiceNames() {
		svc := project.Services[name]
		if svc.Build == nil {
			continue
		}
		ctx := svc.Build.Context
		if info, err := os.Stat(ctx); err != nil || !info.IsDir() {
			problems = append(problems, fmt.Sprintf("service %s: build context %s is not a directory — fix build.context", name, ctx))
			continue
		}
		dockerfile := svc.Build.Dockerfile
		if dockerfile == "" {
			dockerfile = "Dockerfile"
		}
		if !filepath.IsAbs(dockerfile) {
			dockerfile = filepath.Join(ctx, dockerfile)
		}
		if _, err := os.Stat(dockerfile); err != nil {
			problems = append(problems, fmt.Sprintf("service %s: Dockerfile %s does not exist — fix build.dockerfile", name, dockerfile))
		}
	}
	return problems
}
