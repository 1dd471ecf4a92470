//go:build tools

// Package tools pins the docker compose v2 CLI (module github.com/docker/compose/v5) that the
// compose stack test drives. `go install ...@version` refuses the module (its go.mod has exclude
// directives), so it is built from this wrapper module: lib/goTools.ts ensureDockerCompose.
package tools

import _ "github.com/docker/compose/v5/cmd"
