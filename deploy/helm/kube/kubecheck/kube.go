package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	fieldManager = "install-check"
	// instanceLabel is the chart's app.kubernetes.io/instance: the release.
	instanceLabel = "app.kubernetes.io/instance"
	// settle bounds every wait for a controller to act on a new object.
	settle = 60 * time.Second
	poll   = 500 * time.Millisecond
)

// clients are the API clients of one kubeconfig; mapper turns the kinds of
// applied manifests into resources, CRDs included once discovery is reset.
type clients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	disco  discovery.CachedDiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newClients(kubeconfig string) (*clients, error) {
	if kubeconfig == "" {
		return nil, errors.New("KUBECONFIG is not set")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	// Show whatever the API server warns about (Pod Security, unknown
	// fields), as Helm does.
	cfg.WarningHandler = rest.NewWarningWriter(os.Stderr, rest.WarningWriterOptions{})
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	disco := memory.NewMemCacheClient(kube.Discovery())
	return &clients{kube: kube, dyn: dyn, disco: disco, mapper: restmapper.NewDeferredDiscoveryRESTMapper(disco)}, nil
}

// waitReady waits for /readyz and, with the controller manager, for its
// service-account controller to have created default/default: the sign that
// its controllers run.
func (c *clients) waitReady(ctx context.Context, withKCM bool, stdout io.Writer) error {
	start := time.Now()
	var last error
	err := wait.PollUntilContextTimeout(ctx, poll, settle, true, func(ctx context.Context) (bool, error) {
		body, err := c.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = fmt.Errorf("%w: %s", err, body)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("API server not ready after %s: %w", settle, last)
	}
	v, err := c.kube.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	fmt.Fprintf(stdout, "API server %s ready after %s\n", v.GitVersion, time.Since(start).Round(time.Millisecond))
	if !withKCM {
		return nil
	}
	err = wait.PollUntilContextTimeout(ctx, poll, settle, true, func(ctx context.Context) (bool, error) {
		_, err := c.kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("controller manager: no default/default ServiceAccount after %s", settle)
	}
	fmt.Fprintf(stdout, "controller manager running after %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// restrictedNamespace creates a namespace that enforces, audits and warns on
// the restricted Pod Security Standard.
func (c *clients) restrictedNamespace(ctx context.Context, name string, stdout io.Writer) error {
	labels := map[string]string{}
	for _, mode := range []string{"enforce", "audit", "warn"} {
		labels["pod-security.kubernetes.io/"+mode] = "restricted"
		labels["pod-security.kubernetes.io/"+mode+"-version"] = "latest"
	}
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "namespace %s: pod-security.kubernetes.io/enforce=restricted\n", name)
	return nil
}

// objects reads every object of the given YAML files.
func objects(files []string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(m) == 0 {
				continue
			}
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs, nil
}

func (c *clients) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return c.dyn.Resource(m.Resource).Namespace(ns), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// apply server-side applies every object of the files, and waits for each
// CustomResourceDefinition to be established.
func (c *clients) apply(ctx context.Context, files []string, stdout io.Writer) error {
	objs, err := objects(files)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		ri, err := c.resource(obj)
		if err != nil {
			return err
		}
		data, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		force := true
		if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		if obj.GetKind() == "CustomResourceDefinition" {
			if err := c.waitEstablished(ctx, obj.GetName()); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "applied %s/%s\n", obj.GetKind(), obj.GetName())
	}
	c.mapper.Reset()
	return nil
}

func (c *clients) waitEstablished(ctx context.Context, name string) error {
	err := wait.PollUntilContextTimeout(ctx, poll, settle, true, func(ctx context.Context) (bool, error) {
		crd, err := c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CustomResourceDefinition %s not established after %s", name, settle)
	}
	return nil
}

// delete deletes every object of the files and waits until each is gone.
func (c *clients) delete(ctx context.Context, files []string, stdout io.Writer) error {
	objs, err := objects(files)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		ri, err := c.resource(obj)
		if err != nil {
			return err
		}
		if err := ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		err = wait.PollUntilContextTimeout(ctx, poll, settle, true, func(ctx context.Context) (bool, error) {
			_, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			return fmt.Errorf("%s %s still there %s after deletion", obj.GetKind(), obj.GetName(), settle)
		}
		fmt.Fprintf(stdout, "deleted %s/%s\n", obj.GetKind(), obj.GetName())
	}
	c.mapper.Reset()
	c.disco.Invalidate()
	return nil
}

// failedCreates returns the FailedCreate events in the namespace: a
// controller could not create a Pod (Pod Security, a missing
// PriorityClass or ServiceAccount, a quota).
func (c *clients) failedCreates(ctx context.Context, ns string) ([]string, error) {
	events, err := c.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	var out []string
	for _, e := range events.Items {
		if e.Reason == "FailedCreate" {
			out = append(out, fmt.Sprintf("%s/%s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message))
		}
	}
	return out, nil
}

func owned(refs []metav1.OwnerReference, uid types.UID) bool {
	return slices.ContainsFunc(refs, func(r metav1.OwnerReference) bool { return r.UID == uid })
}

// workloads waits until the controllers created the Pods of every Deployment
// (each of its scaled-up ReplicaSets, the newest included) and Job in the
// namespace, and fails on the first FailedCreate event. Pods exist only once
// admission, Pod Security included, let them in.
func (c *clients) workloads(ctx context.Context, ns string, stdout io.Writer) error {
	var pending []string
	var done []string
	err := wait.PollUntilContextTimeout(ctx, poll, settle, true, func(ctx context.Context) (bool, error) {
		if failed, err := c.failedCreates(ctx, ns); err != nil || len(failed) > 0 {
			if err == nil {
				err = fmt.Errorf("FailedCreate events in %s:\n  %s", ns, strings.Join(failed, "\n  "))
			}
			return false, err
		}
		pending, done = nil, nil
		deps, err := c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		rss, err := c.kube.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, d := range deps.Items {
			rev := d.Annotations["deployment.kubernetes.io/revision"]
			newest := false
			for _, rs := range rss.Items {
				if !owned(rs.OwnerReferences, d.UID) || rs.Spec.Replicas == nil || *rs.Spec.Replicas == 0 {
					continue
				}
				if rev != "" && rs.Annotations["deployment.kubernetes.io/revision"] == rev {
					newest = true
				}
				state := fmt.Sprintf("Deployment/%s ReplicaSet/%s (revision %s): %d/%d pods created", d.Name, rs.Name,
					rs.Annotations["deployment.kubernetes.io/revision"], rs.Status.Replicas, *rs.Spec.Replicas)
				if rs.Status.Replicas < *rs.Spec.Replicas {
					pending = append(pending, state)
				} else {
					done = append(done, state)
				}
			}
			if !newest {
				pending = append(pending, fmt.Sprintf("Deployment/%s: no scaled-up ReplicaSet of revision %q yet", d.Name, rev))
			}
		}
		jobs, err := c.kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, j := range jobs.Items {
			n, err := c.podsOf(ctx, ns, j.UID)
			if err != nil {
				return false, err
			}
			state := fmt.Sprintf("Job/%s: %d pods created", j.Name, n)
			if n == 0 {
				pending = append(pending, state)
			} else {
				done = append(done, state)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		if len(pending) > 0 {
			return fmt.Errorf("%w; waiting on:\n  %s", err, strings.Join(pending, "\n  "))
		}
		return err
	}
	sort.Strings(done)
	for _, s := range done {
		fmt.Fprintln(stdout, "  "+s)
	}
	return nil
}

func (c *clients) podsOf(ctx context.Context, ns string, owner types.UID) (int, error) {
	pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list pods: %w", err)
	}
	n := 0
	for _, p := range pods.Items {
		if owned(p.OwnerReferences, owner) {
			n++
		}
	}
	return n, nil
}

// hook waits for the pre-delete hook Job that `helm uninstall` creates (it
// never completes here: no kubelet) and checks that it runs `relay
// deregister` with the relay's own configuration: the Deployment's
// environment, ConfigMap and Secret references. With a controller manager it
// also waits for the Job's Pod, which proves the Pod passes admission.
func (c *clients) hook(ctx context.Context, ns string, stdout io.Writer) error {
	var job *batchv1.Job
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, settle, true, func(ctx context.Context) (bool, error) {
		jobs, err := c.kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i, j := range jobs.Items {
			if strings.Contains(j.Annotations["helm.sh/hook"], "pre-delete") {
				job = &jobs.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("no pre-delete hook Job in %s: %w", ns, err)
	}
	release := job.Labels[instanceLabel]
	deps, err := c.kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: instanceLabel + "=" + release})
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	if len(deps.Items) != 1 {
		return fmt.Errorf("want 1 Deployment of release %q next to Job/%s, got %d", release, job.Name, len(deps.Items))
	}
	dep := deps.Items[0]
	jc, err := container(job.Spec.Template.Spec, "relay")
	if err != nil {
		return fmt.Errorf("Job/%s: %w", job.Name, err)
	}
	dc, err := container(dep.Spec.Template.Spec, "relay")
	if err != nil {
		return fmt.Errorf("Deployment/%s: %w", dep.Name, err)
	}
	var problems []string
	if !slices.Equal(jc.Args, []string{"deregister"}) {
		problems = append(problems, fmt.Sprintf("args: got %q, want [deregister]", jc.Args))
	}
	if jc.Image != dc.Image {
		problems = append(problems, fmt.Sprintf("image: got %s, want the Deployment's %s", jc.Image, dc.Image))
	}
	if got, want := configEnv(jc.Env), configEnv(dc.Env); !reflect.DeepEqual(got, want) {
		problems = append(problems, fmt.Sprintf("env: got %s, want the Deployment's %s", envNames(got), envNames(want)))
	}
	if !reflect.DeepEqual(jc.EnvFrom, dc.EnvFrom) {
		problems = append(problems, fmt.Sprintf("envFrom: got %+v, want the Deployment's %+v", jc.EnvFrom, dc.EnvFrom))
	}
	for _, ef := range jc.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		if _, err := c.kube.CoreV1().ConfigMaps(ns).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{}); err != nil {
			problems = append(problems, fmt.Sprintf("envFrom ConfigMap %s: %v", ef.ConfigMapRef.Name, err))
		}
	}
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		problems = append(problems, fmt.Sprintf("restartPolicy: got %s, want Never", job.Spec.Template.Spec.RestartPolicy))
	}
	if len(problems) > 0 {
		return fmt.Errorf("hook Job/%s:\n  %s", job.Name, strings.Join(problems, "\n  "))
	}
	fmt.Fprintf(stdout, "hook Job/%s (%s): args %q, env %s, envFrom ConfigMap as the Deployment's\n",
		job.Name, job.Annotations["helm.sh/hook"], jc.Args, envNames(configEnv(jc.Env)))
	return nil
}

func container(spec corev1.PodSpec, name string) (corev1.Container, error) {
	for _, c := range spec.Containers {
		if c.Name == name {
			return c, nil
		}
	}
	return corev1.Container{}, fmt.Errorf("no container %q", name)
}

// configEnv drops the variables taken from the container's own resources
// (GOMEMLIMIT from its memory limit): the hook's resources differ by design.
func configEnv(env []corev1.EnvVar) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, e := range env {
		if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
			continue
		}
		out = append(out, e)
	}
	return out
}

func envNames(env []corev1.EnvVar) string {
	names := make([]string, 0, len(env))
	for _, e := range env {
		names = append(names, e.Name)
	}
	return "[" + strings.Join(names, " ") + "]"
}

// released are the kinds the chart renders (hooks and the objects that
// controllers make aside); gone checks none of the release's is left.
var released = []schema.GroupVersionResource{
	appsv1.SchemeGroupVersion.WithResource("deployments"),
	corev1.SchemeGroupVersion.WithResource("services"),
	corev1.SchemeGroupVersion.WithResource("configmaps"),
	corev1.SchemeGroupVersion.WithResource("secrets"),
	corev1.SchemeGroupVersion.WithResource("serviceaccounts"),
	{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"},
	{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"},
	{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
	{Group: "monitoring.coreos.com", Version: "v1", Resource: "prometheusrules"},
	{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"},
}

// gone checks that nothing labelled with the release is left in the
// namespace after `helm uninstall`, hook Jobs aside (listed).
func (c *clients) gone(ctx context.Context, ns, release string, stdout io.Writer) error {
	sel := metav1.ListOptions{LabelSelector: instanceLabel + "=" + release}
	var left []string
	for _, gvr := range released {
		list, err := c.dyn.Resource(gvr).Namespace(ns).List(ctx, sel)
		if apierrors.IsNotFound(err) {
			continue // CRD not installed
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", gvr.Resource, err)
		}
		for _, o := range list.Items {
			left = append(left, o.GetKind()+"/"+o.GetName())
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind by helm uninstall in %s: %s", ns, strings.Join(left, ", "))
	}
	jobs, err := c.kube.BatchV1().Jobs(ns).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	for _, j := range jobs.Items {
		fmt.Fprintf(stdout, "  hook Job/%s left behind (helm.sh/hook-delete-policy: %s)\n", j.Name, j.Annotations["helm.sh/hook-delete-policy"])
	}
	fmt.Fprintf(stdout, "release %s: nothing left in %s\n", release, ns)
	return nil
}
