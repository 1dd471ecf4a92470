// compose-check loads a compose file the way `docker compose` does (compose-go: schema validation,
// interpolation with the env files, references between services) and prints the normalized
// project, or exits 1 with the loader's message. No Docker engine is needed, so the test suite
// can check docker-compose.yml on any machine.
//
//	compose-check [-profiles gpu] [-env-file .env.example] [-json|-q] docker-compose.yml [overlay.yml ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	profiles := flag.String("profiles", "", "comma-separated profiles to enable")
	envFile := flag.String("env-file", "", "env file to interpolate from (instead of .env next to the compose file)")
	quiet := flag.Bool("q", false, "print nothing on success")
	asJSON := flag.Bool("json", false, "print the normalized project as JSON instead of YAML")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-profiles p1,p2] [-env-file FILE] [-json|-q] compose.yml [overlay.yml ...]")
		os.Exit(2)
	}
	opts := []cli.ProjectOptionsFn{cli.WithName("atelier"), cli.WithOsEnv}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile))
	} else {
		opts = append(opts, cli.WithEnvFiles())
	}
	opts = append(opts, cli.WithDotEnv)
	if *profiles != "" {
		opts = append(opts, cli.WithProfiles(strings.Split(*profiles, ",")))
	}
	po, err := cli.NewProjectOptions(flag.Args(), opts...)
	if err != nil {
		fail(err)
	}
	project, err := po.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	if *quiet {
		return
	}
	var out []byte
	if *asJSON {
		out, err = project.MarshalJSON()
	} else {
		out, err = project.MarshalYAML()
	}
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
	os.Exit(1)
}
