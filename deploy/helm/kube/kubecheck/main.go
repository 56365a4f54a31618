// Command kubecheck is deploy/helm/install-check's hands on the API server:
// it writes the throwaway PKI and kubeconfig, waits for the control plane,
// creates restricted namespaces and applies manifests, and asserts what Helm
// alone cannot see (the Pods that controllers create, FailedCreate events,
// the deregister hook Job). Each subcommand exits non-zero with one message
// on failure.
//
//	kubecheck freeport
//	kubecheck pki DIR SERVER_URL
//	kubecheck wait-ready [-controller-manager]
//	kubecheck namespace NAME
//	kubecheck apply FILE...
//	kubecheck delete FILE...
//	kubecheck workloads NAMESPACE
//	kubecheck hook NAMESPACE
//	kubecheck gone NAMESPACE RELEASE
//
// All but the first two read the kubeconfig from $KUBECONFIG.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage: kubecheck freeport | pki DIR SERVER_URL | wait-ready [-controller-manager] | namespace NAME | apply FILE... | delete FILE... | workloads NAMESPACE | hook NAMESPACE | gone NAMESPACE RELEASE")

func dispatch(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, args := args[0], args[1:]
	switch {
	case cmd == "freeport" && len(args) == 0:
		return freePort(stdout)
	case cmd == "pki" && len(args) == 2:
		return writePKI(args[0], args[1])
	}
	c, err := newClients(os.Getenv("KUBECONFIG"))
	if err != nil {
		return err
	}
	switch {
	case cmd == "wait-ready" && len(args) <= 1:
		withKCM := len(args) == 1 && args[0] == "-controller-manager"
		if len(args) == 1 && !withKCM {
			return errUsage
		}
		return c.waitReady(ctx, withKCM, stdout)
	case cmd == "namespace" && len(args) == 1:
		return c.restrictedNamespace(ctx, args[0], stdout)
	case cmd == "apply" && len(args) > 0:
		return c.apply(ctx, args, stdout)
	case cmd == "delete" && len(args) > 0:
		return c.delete(ctx, args, stdout)
	case cmd == "workloads" && len(args) == 1:
		return c.workloads(ctx, args[0], stdout)
	case cmd == "hook" && len(args) == 1:
		return c.hook(ctx, args[0], stdout)
	case cmd == "gone" && len(args) == 2:
		return c.gone(ctx, args[0], args[1], stdout)
	}
	return errUsage
}
