//go:build tools

// Package tools only records the commands this module builds, so `go mod tidy` keeps
// their dependencies in go.sum. It is never compiled (build tag tools).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
