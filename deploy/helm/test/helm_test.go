// Package test renders the datagrid-relay chart with helm and checks the
// objects it produces: what must hold for every values file (hardening,
// probes, secrets, shutdown timing) and what each toggle adds.
//
// The helm binary comes from $HELM (deploy/helm/check builds a pinned one),
// else from PATH.
package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../datagrid-relay"
	release     = "relay"
	namespace   = "relay-ns"
	fullname    = "relay-datagrid-relay"
	kubeVersion = "1.33.0"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		helmPath, helmErr = exec.LookPath("helm")
	})
	if helmErr != nil {
		t.Fatalf("no helm: set HELM to a helm v3 binary (deploy/helm/check builds one): %v", helmErr)
	}
	return helmPath
}

// threeValues is the smallest install: API key, public URL, NATS URL.
var threeValues = []string{
	"--set", "datagrid.apiKey=dg_key_threevalues",
	"--set", "publicUrl=https://relay.example.com/webhooks/datagrid",
	"--set", "nats.url=nats://nats:4222",
}

// ciValues returns -f args for one of the chart's ci/*-values.yaml files.
func ciValues(name string) []string {
	return []string{"-f", filepath.Join(chartDir, "ci", name+"-values.yaml")}
}

// helmTemplate runs `helm template` with args and returns its stdout, or
// an error carrying stderr.
func helmTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helmTemplateAPIs(t, clusterAPIs, args...)
}

// clusterAPIs are the optional APIs the test cluster serves: the
// Prometheus Operator's and the Gateway API's. helm template sees none of
// them unless told, and the chart refuses to render objects of an API the
// cluster lacks (capabilitiesCheck).
var clusterAPIs = []string{"monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1"}

// helmTemplateAPIs is helmTemplate for a cluster that serves exactly the
// given optional APIs.
func helmTemplateAPIs(t *testing.T, apis []string, args ...string) (string, error) {
	t.Helper()
	full := []string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	for _, a := range apis {
		full = append(full, "--api-versions", a)
	}
	full = append(full, args...)
	cmd := exec.Command(helm(t), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm %s: %w: %s", strings.Join(full, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// doc is one rendered object: its raw YAML and its kind and name.
type doc struct {
	raw  []byte
	kind string
	name string
	// generic is the object as plain maps, for assertions on any kind.
	generic map[string]any
}

// rendered is the whole output of one render.
type rendered struct {
	text string
	docs []doc
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// render runs helm template and splits the output into objects; a failed
// render fails the test.
func render(t *testing.T, args ...string) rendered {
	t.Helper()
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{text: out}
	for _, part := range docSep.Split(out, -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(part), &m); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, part)
		}
		if len(m) == 0 {
			continue // comments only
		}
		kind, _ := m["kind"].(string)
		meta, _ := m["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		r.docs = append(r.docs, doc{raw: []byte(part), kind: kind, name: name, generic: m})
	}
	return r
}

// kinds returns "Kind/name" of every object, sorted.
func (r rendered) kinds() []string {
	var ks []string
	for _, d := range r.docs {
		ks = append(ks, d.kind+"/"+d.name)
	}
	sort.Strings(ks)
	return ks
}

func (r rendered) all(kind string) []doc {
	var ds []doc
	for _, d := range r.docs {
		if d.kind == kind {
			ds = append(ds, d)
		}
	}
	return ds
}

// one decodes the single object of kind named name into out, strictly: a
// field Kubernetes does not know fails the test.
func (r rendered) one(t *testing.T, kind, name string, out any) {
	t.Helper()
	for _, d := range r.docs {
		if d.kind == kind && d.name == name {
			if err := yaml.UnmarshalStrict(d.raw, out); err != nil {
				t.Fatalf("%s/%s does not decode strictly: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s/%s rendered; got %v", kind, name, r.kinds())
}

func (r rendered) has(kind, name string) bool {
	for _, d := range r.docs {
		if d.kind == kind && d.name == name {
			return true
		}
	}
	return false
}

func (r rendered) deployment(t *testing.T) appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	r.one(t, "Deployment", fullname, &d)
	return d
}

func (r rendered) configMap(t *testing.T) map[string]string {
	t.Helper()
	var cm corev1.ConfigMap
	r.one(t, "ConfigMap", fullname, &cm)
	return cm.Data
}

// typed maps each core kind the chart renders to its Go type, so that every
// rendered object is checked field by field against the Kubernetes API.
var typed = map[string]func() any{
	"ConfigMap":               func() any { return &corev1.ConfigMap{} },
	"Secret":                  func() any { return &corev1.Secret{} },
	"Service":                 func() any { return &corev1.Service{} },
	"ServiceAccount":          func() any { return &corev1.ServiceAccount{} },
	"Pod":                     func() any { return &corev1.Pod{} },
	"Deployment":              func() any { return &appsv1.Deployment{} },
	"Job":                     func() any { return &batchv1.Job{} },
	"Ingress":                 func() any { return &networkingv1.Ingress{} },
	"NetworkPolicy":           func() any { return &networkingv1.NetworkPolicy{} },
	"PodDisruptionBudget":     func() any { return &policyv1.PodDisruptionBudget{} },
	"HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// TestCIValues renders every ci/*-values.yaml, checks exactly which objects
// each produces, and the properties every render must have.
func TestCIValues(t *testing.T) {
	base := []string{
		"ConfigMap/" + fullname,
		"Deployment/" + fullname,
		"Pod/" + fullname + "-test-readyz",
		"Service/" + fullname,
		"ServiceAccount/" + fullname,
	}
	cases := map[string][]string{
		"default": append(slices.Clone(base), "Secret/"+fullname),
		"production": append(slices.Clone(base),
			"ConfigMap/"+fullname+"-dashboard",
			"HorizontalPodAutoscaler/"+fullname,
			"Ingress/"+fullname,
			"Job/"+fullname+"-deregister",
			"NetworkPolicy/"+fullname,
			"PodDisruptionBudget/"+fullname,
			"PrometheusRule/"+fullname,
			"ServiceMonitor/"+fullname,
		),
		"static-secret": append(slices.Clone(base), "PodDisruptionBudget/"+fullname),
	}
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci values files: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		want, ok := cases[name]
		if !ok {
			t.Errorf("ci/%s has no expected object list in TestCIValues", filepath.Base(f))
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := render(t, ciValues(name)...)
			got := r.kinds()
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("objects:\n got %v\nwant %v", got, want)
			}
			checkEveryRender(t, r)
		})
	}
}

// checkEveryRender asserts what must hold whatever the values.
func checkEveryRender(t *testing.T, r rendered) {
	t.Helper()
	chartVersion, appVersion := chartVersions(t)

	for _, d := range r.docs {
		// Every core object decodes strictly into its Kubernetes type.
		if newObj, ok := typed[d.kind]; ok {
			if err := yaml.UnmarshalStrict(d.raw, newObj()); err != nil {
				t.Errorf("%s/%s does not decode strictly: %v", d.kind, d.name, err)
			}
		}
		if len(d.name) > 63 {
			t.Errorf("%s/%s: name longer than 63 characters", d.kind, d.name)
		}
		labels := nestedMap(d.generic, "metadata", "labels")
		for k, want := range map[string]string{
			"app.kubernetes.io/name":       "datagrid-relay",
			"app.kubernetes.io/instance":   release,
			"app.kubernetes.io/managed-by": "Helm",
			"helm.sh/chart":                "datagrid-relay-" + chartVersion,
		} {
			if got, _ := labels[k].(string); got != want {
				t.Errorf("%s/%s: label %s = %q, want %q", d.kind, d.name, k, got, want)
			}
		}
		if _, ok := labels["app.kubernetes.io/version"]; !ok {
			t.Errorf("%s/%s: no app.kubernetes.io/version label", d.kind, d.name)
		}
	}

	dep := r.deployment(t)
	pod := dep.Spec.Template.Spec
	checkPodHardening(t, "Deployment", pod)
	c := container(t, pod, "relay")

	// The selector never matches the test or hook pods, and matches the
	// Deployment's own pods.
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s not on the pod template (labels %v)", k, v, dep.Spec.Template.Labels)
		}
	}
	if dep.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != "gateway" {
		t.Errorf("selector %v: want app.kubernetes.io/component=gateway", dep.Spec.Selector.MatchLabels)
	}

	// Image tag defaults to appVersion (the production values pin the same).
	if want := ":" + appVersion; !strings.HasSuffix(c.Image, want) {
		t.Errorf("image %q: want tag %s", c.Image, want)
	}
	if !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("args %v, want [serve]", c.Args)
	}

	// Probes on the admin port.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] == 0 || ports["admin"] == 0 {
		t.Errorf("container ports %v: want http and admin", ports)
	}
	for name, want := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"liveness":  {c.LivenessProbe, "/healthz"},
		"readiness": {c.ReadinessProbe, "/readyz"},
	} {
		p := want.probe
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: got %+v, want an httpGet probe", name, p)
			continue
		}
		if p.HTTPGet.Path != want.path || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe: got %s on port %s, want %s on port admin", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), want.path)
		}
	}

	// No startup probe: /healthz answers from the start, so it would wait
	// for nothing.
	if c.StartupProbe != nil {
		t.Errorf("startup probe %+v; want none", c.StartupProbe)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("enableServiceLinks %v, want false", boolString(pod.EnableServiceLinks))
	}

	// The listeners match the container ports.
	cm := r.configMap(t)
	if cm["RELAY_LISTEN_ADDR"] != fmt.Sprintf(":%d", ports["http"]) || cm["RELAY_ADMIN_ADDR"] != fmt.Sprintf(":%d", ports["admin"]) {
		t.Errorf("listen %q admin %q, want the container ports %v", cm["RELAY_LISTEN_ADDR"], cm["RELAY_ADMIN_ADDR"], ports)
	}
	if cm["NATS_URL"] == "" {
		t.Error("NATS_URL not rendered")
	}

	// The grace period outlasts the relay's own shutdown deadline, and the
	// preStop sleep before it.
	shutdown, err := time.ParseDuration(cm["RELAY_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("RELAY_SHUTDOWN_TIMEOUT %q: %v", cm["RELAY_SHUTDOWN_TIMEOUT"], err)
	}
	needed := shutdown
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Exec != nil {
			t.Errorf("preStop %+v: want the kubelet's sleep action (the image has no shell)", c.Lifecycle.PreStop)
		} else {
			needed += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	}
	if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= needed {
		t.Errorf("terminationGracePeriodSeconds %v: want more than shutdown timeout + preStop (%v)", pod.TerminationGracePeriodSeconds, needed)
	}

	// Secrets only by reference; the env never carries a secret value.
	checkSecretEnv(t, "Deployment", c)

	// Config and secret changes roll the pods.
	for _, a := range []string{"checksum/config", "checksum/secret"} {
		if len(dep.Spec.Template.Annotations[a]) != 64 {
			t.Errorf("pod annotation %s = %q, want a sha256", a, dep.Spec.Template.Annotations[a])
		}
	}

	// Spread over nodes, with a selector that finds the relay's pods.
	if len(pod.TopologySpreadConstraints) == 0 {
		t.Error("no topologySpreadConstraints")
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil || !mapSubset(tsc.LabelSelector.MatchLabels, dep.Spec.Template.Labels) || len(tsc.LabelSelector.MatchLabels) == 0 {
			t.Errorf("topology spread on %s: selector %v does not match the pods", tsc.TopologyKey, tsc.LabelSelector)
		}
	}

	// The ServiceAccount, when rendered, mounts no token either.
	for _, d := range r.all("ServiceAccount") {
		var sa corev1.ServiceAccount
		r.one(t, "ServiceAccount", d.name, &sa)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken %s, want false", d.name, boolString(sa.AutomountServiceAccountToken))
		}
	}

	// The Service exposes both ports by name, to the relay's pods only.
	var svc corev1.Service
	r.one(t, "Service", fullname, &svc)
	svcPorts := map[string]string{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.TargetPort.String()
	}
	if svcPorts["http"] != "http" || svcPorts["admin"] != "admin" {
		t.Errorf("Service ports %v: want http->http and admin->admin", svcPorts)
	}
	if !maps.Equal(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("Service selector %v, want the Deployment's %v", svc.Spec.Selector, dep.Spec.Selector.MatchLabels)
	}

	// PDB exactly when more than one replica runs at the least.
	minReplicas := int32(1)
	if dep.Spec.Replicas != nil {
		minReplicas = *dep.Spec.Replicas
	}
	if r.has("HorizontalPodAutoscaler", fullname) {
		if dep.Spec.Replicas != nil {
			t.Error("Deployment sets replicas although an HPA scales it")
		}
		var hpa autoscalingv2.HorizontalPodAutoscaler
		r.one(t, "HorizontalPodAutoscaler", fullname, &hpa)
		minReplicas = *hpa.Spec.MinReplicas
		if hpa.Spec.ScaleTargetRef.Name != fullname || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("HPA targets %+v", hpa.Spec.ScaleTargetRef)
		}
	}
	if got, want := r.has("PodDisruptionBudget", fullname), minReplicas > 1; got != want {
		t.Errorf("PodDisruptionBudget rendered %v with at least %d replicas, want %v", got, minReplicas, want)
	}
	if r.has("PodDisruptionBudget", fullname) {
		var pdb policyv1.PodDisruptionBudget
		r.one(t, "PodDisruptionBudget", fullname, &pdb)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || !maps.Equal(pdb.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) {
			t.Errorf("PDB spec %+v: want maxUnavailable 1 over the relay's pods", pdb.Spec)
		}
	}

	// The test pod checks /readyz on the admin port and is hardened too.
	var testPod corev1.Pod
	r.one(t, "Pod", fullname+"-test-readyz", &testPod)
	if testPod.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("test pod hook %q, want test", testPod.Annotations["helm.sh/hook"])
	}
	checkPodHardening(t, "test Pod", testPod.Spec)
	cmd := strings.Join(container(t, testPod.Spec, "readyz").Command, " ")
	if want := fmt.Sprintf("%s.%s.svc:%d/readyz", fullname, namespace, servicePort(svc, "admin")); !strings.Contains(cmd, want) {
		t.Errorf("test pod runs %q, want a request to %s", cmd, want)
	}
	if testPod.Labels["app.kubernetes.io/component"] == "gateway" {
		t.Error("the test pod carries the relay's selector labels")
	}

	// The hook Job, when rendered, runs deregister with the relay's
	// configuration, hardened.
	if r.has("Job", fullname+"-deregister") {
		var job batchv1.Job
		r.one(t, "Job", fullname+"-deregister", &job)
		if job.Annotations["helm.sh/hook"] != "pre-delete" {
			t.Errorf("deregister Job hook %q, want pre-delete", job.Annotations["helm.sh/hook"])
		}
		checkPodHardening(t, "deregister Job", job.Spec.Template.Spec)
		jc := container(t, job.Spec.Template.Spec, "relay")
		if !slices.Equal(jc.Args, []string{"deregister"}) || jc.Image != c.Image {
			t.Errorf("deregister Job runs %s %v, want %s [deregister]", jc.Image, jc.Args, c.Image)
		}
		checkSecretEnv(t, "deregister Job", jc)
		if fmt.Sprint(jc.EnvFrom) != fmt.Sprint(c.EnvFrom) || fmt.Sprint(jc.Env) != fmt.Sprint(c.Env) || fmt.Sprint(jc.VolumeMounts) != fmt.Sprint(c.VolumeMounts) {
			t.Error("deregister Job's environment or mounts differ from the relay's")
		}
		if job.Spec.Template.Labels["app.kubernetes.io/component"] == "gateway" {
			t.Error("the deregister pod carries the relay's selector labels")
		}
	}
}

// checkPodHardening asserts the secure defaults on a pod and its containers.
func checkPodHardening(t *testing.T, what string, pod corev1.PodSpec) {
	t.Helper()
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken %s, want false", what, boolString(pod.AutomountServiceAccountToken))
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod runAsNonRoot not true", what)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile not RuntimeDefault", what)
	}
	if len(pod.Containers) == 0 {
		t.Fatalf("%s: no containers", what)
	}
	for _, c := range append(slices.Clone(pod.Containers), pod.InitContainers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", what, c.Name)
			continue
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation not false", what, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: readOnlyRootFilesystem not true", what, c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities %+v, want drop [ALL] and no add", what, c.Name, sc.Capabilities)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s/%s: privileged", what, c.Name)
		}
		// runAsNonRoot and seccomp may come from the pod; a container must
		// not undo them.
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			t.Errorf("%s/%s: runAsNonRoot false", what, c.Name)
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s/%s: seccompProfile %s", what, c.Name, sc.SeccompProfile.Type)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("%s/%s: runs as uid 0", what, c.Name)
		}
		res := c.Resources
		if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: resources %+v, want cpu and memory requests and a memory limit", what, c.Name, res)
		}
	}
}

// secretVars are the variables that hold secrets: never a literal value.
var secretVars = []string{"DATAGRID_API_KEY", "RELAY_WEBHOOK_SECRET", "NATS_PASSWORD", "NATS_TOKEN"}

func checkSecretEnv(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	found := 0
	for _, e := range c.Env {
		if !slices.Contains(secretVars, e.Name) {
			continue
		}
		found++
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
			t.Errorf("%s: %s = %+v, want a secretKeyRef", what, e.Name, e)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional {
			t.Errorf("%s: %s is optional: a missing key must stop the pod, not start it unconfigured", what, e.Name)
		}
	}
	if found == 0 {
		t.Errorf("%s: neither DATAGRID_API_KEY nor RELAY_WEBHOOK_SECRET in env", what)
	}
}

// TestExistingSecretRendersNoSecretValue: with existingSecret, no Secret is
// rendered and no inline secret value appears anywhere, even if set.
func TestExistingSecretRendersNoSecretValue(t *testing.T) {
	t.Parallel()
	sentinels := map[string]string{
		"datagrid.apiKey":    "SENTINEL-api-key",
		"webhookSecret":      "SENTINEL-webhook-secret",
		"nats.auth.password": "SENTINEL-nats-password",
		"nats.auth.token":    "SENTINEL-nats-token",
		"nats.auth.creds":    "SENTINEL-nats-creds",
		"nats.auth.nkeySeed": "SENTINEL-nats-seed",
	}
	for _, mode := range []string{"register", "static"} {
		for _, auth := range []string{"userPassword", "token", "creds", "nkey"} {
			t.Run(mode+"/"+auth, func(t *testing.T) {
				t.Parallel()
				args := []string{"--set", "mode=" + mode, "--set", "existingSecret=mine", "--set", "nats.url=nats://nats:4222",
					"--set", "publicUrl=https://relay.example.com/hook", "--set", "nats.auth.type=" + auth, "--set", "nats.auth.user=relay",
					"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true", "--set", "dashboard.enabled=true"}
				if mode == "register" {
					args = append(args, "--set", "deregisterHook.enabled=true")
				}
				for k, v := range sentinels {
					args = append(args, "--set", k+"="+v)
				}
				r := render(t, args...)
				if len(r.all("Secret")) != 0 {
					t.Errorf("Secret rendered with existingSecret: %v", r.kinds())
				}
				for _, v := range sentinels {
					for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
						if strings.Contains(r.text, form) {
							t.Errorf("secret value %q rendered with existingSecret", v)
						}
					}
				}
				c := container(t, r.deployment(t).Spec.Template.Spec, "relay")
				checkSecretEnv(t, "Deployment", c)
				for _, e := range c.Env {
					if slices.Contains(secretVars, e.Name) && e.ValueFrom.SecretKeyRef.Name != "mine" {
						t.Errorf("%s from Secret %q, want mine", e.Name, e.ValueFrom.SecretKeyRef.Name)
					}
				}
			})
		}
	}
}

// TestChartSecret: without existingSecret, the chart's Secret holds exactly
// the values the mode and NATS auth need, and the pods reference them.
func TestChartSecret(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		args     []string
		wantData map[string]string
		wantEnv  map[string]string // variable -> key in the Secret
		wantFile map[string]string // variable -> mounted file path
	}{
		{
			name:     "register",
			args:     threeValues,
			wantData: map[string]string{"DATAGRID_API_KEY": "dg_key_threevalues"},
			wantEnv:  map[string]string{"DATAGRID_API_KEY": "DATAGRID_API_KEY"},
		},
		{
			name:     "static with token",
			args:     []string{"--set", "mode=static", "--set", "webhookSecret=whsec_a\\,whsec_b", "--set", "nats.url=nats://n:4222", "--set", "nats.auth.type=token", "--set", "nats.auth.token=tok"},
			wantData: map[string]string{"RELAY_WEBHOOK_SECRET": "whsec_a,whsec_b", "NATS_TOKEN": "tok"},
			wantEnv:  map[string]string{"RELAY_WEBHOOK_SECRET": "RELAY_WEBHOOK_SECRET", "NATS_TOKEN": "NATS_TOKEN"},
		},
		{
			name:     "user and password",
			args:     append(slices.Clone(threeValues), "--set", "nats.auth.type=userPassword", "--set", "nats.auth.user=relay", "--set", "nats.auth.password=pw"),
			wantData: map[string]string{"DATAGRID_API_KEY": "dg_key_threevalues", "NATS_PASSWORD": "pw"},
			wantEnv:  map[string]string{"DATAGRID_API_KEY": "DATAGRID_API_KEY", "NATS_PASSWORD": "NATS_PASSWORD"},
		},
		{
			name:     "creds file",
			args:     append(slices.Clone(threeValues), "--set", "nats.auth.type=creds", "--set", "nats.auth.creds=CREDS"),
			wantData: map[string]string{"DATAGRID_API_KEY": "dg_key_threevalues", "nats.creds": "CREDS"},
			wantEnv:  map[string]string{"DATAGRID_API_KEY": "DATAGRID_API_KEY"},
			wantFile: map[string]string{"NATS_CREDS": "/etc/relay/nats-auth/nats.creds"},
		},
		{
			name:     "nkey seed file",
			args:     append(slices.Clone(threeValues), "--set", "nats.auth.type=nkey", "--set", "nats.auth.nkeySeed=SEED"),
			wantData: map[string]string{"DATAGRID_API_KEY": "dg_key_threevalues", "nkey.seed": "SEED"},
			wantEnv:  map[string]string{"DATAGRID_API_KEY": "DATAGRID_API_KEY"},
			wantFile: map[string]string{"NATS_NKEY_SEED_FILE": "/etc/relay/nats-auth/nkey.seed"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, tc.args...)
			checkEveryRender(t, r)
			var s corev1.Secret
			r.one(t, "Secret", fullname, &s)
			got := map[string]string{}
			for k, v := range s.Data {
				got[k] = string(v)
			}
			if !maps.Equal(got, tc.wantData) {
				t.Errorf("Secret data %v, want %v", got, tc.wantData)
			}
			c := container(t, r.deployment(t).Spec.Template.Spec, "relay")
			gotEnv := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					if e.ValueFrom.SecretKeyRef.Name != fullname {
						t.Errorf("%s from Secret %q, want %q", e.Name, e.ValueFrom.SecretKeyRef.Name, fullname)
					}
					gotEnv[e.Name] = e.ValueFrom.SecretKeyRef.Key
				}
			}
			if !maps.Equal(gotEnv, tc.wantEnv) {
				t.Errorf("secret env %v, want %v", gotEnv, tc.wantEnv)
			}
			cm := r.configMap(t)
			for v, path := range tc.wantFile {
				if cm[v] != path {
					t.Errorf("%s = %q, want %q", v, cm[v], path)
				}
				mounted := false
				for _, m := range c.VolumeMounts {
					if strings.HasPrefix(path, m.MountPath+"/") {
						mounted = true
					}
				}
				if !mounted {
					t.Errorf("%s: nothing mounted at %s", v, path)
				}
			}
			for _, v := range secretVars {
				if _, ok := cm[v]; ok {
					t.Errorf("secret variable %s in the ConfigMap", v)
				}
			}
		})
	}
}

// TestThreeValueInstall: the smallest install renders the public URL and
// NATS URL as given and the relay's defaults otherwise.
func TestThreeValueInstall(t *testing.T) {
	t.Parallel()
	r := render(t, threeValues...)
	checkEveryRender(t, r)
	cm := r.configMap(t)
	for k, want := range map[string]string{
		"RELAY_PUBLIC_URL":       "https://relay.example.com/webhooks/datagrid",
		"NATS_URL":               "nats://nats:4222",
		"RELAY_SHUTDOWN_TIMEOUT": "20s",
		"RELAY_PUBLISH_MODE":     "jetstream",
	} {
		if cm[k] != want {
			t.Errorf("%s = %q, want %q", k, cm[k], want)
		}
	}
	if _, ok := cm["RELAY_EVENTS"]; ok {
		t.Error("RELAY_EVENTS rendered by default: the relay's own default (all known types) should apply")
	}
	dep := r.deployment(t)
	if *dep.Spec.Replicas != 1 {
		t.Errorf("replicas %d, want 1", *dep.Spec.Replicas)
	}
}

// TestPDB: a PodDisruptionBudget exactly when more than one replica runs.
func TestPDB(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want bool
	}{
		{"one replica", []string{"--set", "replicaCount=1"}, false},
		{"two replicas", []string{"--set", "replicaCount=2"}, true},
		{"disabled", []string{"--set", "replicaCount=3", "--set", "podDisruptionBudget.enabled=false"}, false},
		{"hpa from two", []string{"--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=2"}, true},
		{"hpa from one", []string{"--set", "replicaCount=3", "--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=1"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, append(slices.Clone(threeValues), tc.args...)...)
			if got := r.has("PodDisruptionBudget", fullname); got != tc.want {
				t.Errorf("PDB rendered: got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestIngress: host and path come from publicUrl; only the delivery path is
// routed, to the http port.
func TestIngress(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name               string
		args               []string
		wantHost, wantPath string
		wantTLS            string
	}{
		{"from publicUrl", []string{"--set", "publicUrl=https://hooks.example.org/in/datagrid"}, "hooks.example.org", "/in/datagrid", ""},
		{"no path", []string{"--set", "publicUrl=https://hooks.example.org"}, "hooks.example.org", "/", ""},
		{"host override and tls", []string{"--set", "publicUrl=https://hooks.example.org/x", "--set", "ingress.host=internal.example.org",
			"--set", "ingress.tls.enabled=true", "--set", "ingress.tls.secretName=cert"}, "internal.example.org", "/x", "cert"},
		{"default tls secret", []string{"--set", "ingress.tls.enabled=true"}, "relay.example.com", "/webhooks/datagrid", fullname + "-tls"},
		{"static mode", []string{"--set", "mode=static", "--set", "webhookSecret=s", "--set", "publicUrl=https://s.example.org/p"}, "s.example.org", "/p", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append(slices.Clone(threeValues), "--set", "ingress.enabled=true", "--set", "ingress.className=nginx")
			r := render(t, append(args, tc.args...)...)
			var ing networkingv1.Ingress
			r.one(t, "Ingress", fullname, &ing)
			if len(ing.Spec.Rules) != 1 || len(ing.Spec.Rules[0].HTTP.Paths) != 1 {
				t.Fatalf("rules %+v, want one rule with one path", ing.Spec.Rules)
			}
			rule := ing.Spec.Rules[0]
			p := rule.HTTP.Paths[0]
			if rule.Host != tc.wantHost || p.Path != tc.wantPath {
				t.Errorf("routes %s%s, want %s%s", rule.Host, p.Path, tc.wantHost, tc.wantPath)
			}
			if p.Backend.Service == nil || p.Backend.Service.Name != fullname || p.Backend.Service.Port.Name != "http" {
				t.Errorf("backend %+v, want %s port http", p.Backend, fullname)
			}
			if *ing.Spec.IngressClassName != "nginx" {
				t.Errorf("class %q", *ing.Spec.IngressClassName)
			}
			var gotTLS string
			if len(ing.Spec.TLS) == 1 {
				gotTLS = ing.Spec.TLS[0].SecretName
				if !slices.Equal(ing.Spec.TLS[0].Hosts, []string{tc.wantHost}) {
					t.Errorf("TLS hosts %v, want [%s]", ing.Spec.TLS[0].Hosts, tc.wantHost)
				}
			}
			if gotTLS != tc.wantTLS {
				t.Errorf("TLS secret %q, want %q", gotTLS, tc.wantTLS)
			}
		})
	}
}

// TestNetworkPolicy: the admin port only from the monitoring peers (and the
// chart's test pod); the delivery port from the configured peers.
func TestNetworkPolicy(t *testing.T) {
	t.Parallel()
	r := render(t, ciValues("production")...)
	var np networkingv1.NetworkPolicy
	r.one(t, "NetworkPolicy", fullname, &np)
	dep := r.deployment(t)
	if !maps.Equal(np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels) {
		t.Errorf("policy selects %v, want the relay's pods %v", np.Spec.PodSelector.MatchLabels, dep.Spec.Selector.MatchLabels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policy types %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	// Egress: DNS to kube-dns, NATS to its namespace, the API on 443.
	egress := map[string][]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			egress[fmt.Sprintf("%s/%s", *p.Protocol, p.Port)] = rule.To
		}
	}
	for _, want := range []string{"UDP/53", "TCP/53", "TCP/4222", "TCP/443"} {
		if _, ok := egress[want]; !ok {
			t.Errorf("egress %v: no rule for %s", slices.Collect(maps.Keys(egress)), want)
		}
	}
	if to := egress["TCP/4222"]; len(to) != 1 || to[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "nats" {
		t.Errorf("NATS egress to %+v, want the nats namespace", to)
	}
	if to := egress["UDP/53"]; len(to) != 1 || to[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" {
		t.Errorf("DNS egress to %+v, want kube-dns", to)
	}
	if to := egress["TCP/443"]; len(to) != 0 {
		t.Errorf("API egress to %+v, want anywhere ([])", to)
	}
	var testPod corev1.Pod
	r.one(t, "Pod", fullname+"-test-readyz", &testPod)
	for _, rule := range np.Spec.Ingress {
		if len(rule.Ports) != 1 {
			t.Fatalf("rule %+v: want one port", rule)
		}
		switch port := rule.Ports[0].Port.String(); port {
		case "http":
			if len(rule.From) != 1 || rule.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" {
				t.Errorf("delivery port open to %+v, want the ingress-nginx namespace", rule.From)
			}
		case "admin":
			if len(rule.From) == 0 {
				t.Fatal("admin port open to everyone")
			}
			monitoring, test := false, false
			for _, peer := range rule.From {
				switch {
				case peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "monitoring":
					monitoring = true
				case peer.PodSelector != nil && peer.NamespaceSelector == nil && mapSubset(peer.PodSelector.MatchLabels, testPod.Labels) &&
					peer.PodSelector.MatchLabels["app.kubernetes.io/component"] == "test":
					test = true
				default:
					t.Errorf("admin port open to unexpected peer %+v", peer)
				}
			}
			if !monitoring || !test {
				t.Errorf("admin port peers %+v: want monitoring and the test pod", rule.From)
			}
		default:
			t.Errorf("rule for unexpected port %s", port)
		}
	}
	if len(np.Spec.Ingress) != 2 {
		t.Errorf("%d ingress rules, want 2", len(np.Spec.Ingress))
	}
}

// TestNetworkPolicyEmptyMeansEveryone: [] means every source on both ports,
// as a Kubernetes rule without `from` does (it used to block Prometheus on
// the admin port), and without egress.enabled no egress is restricted.
func TestNetworkPolicyEmptyMeansEveryone(t *testing.T) {
	t.Parallel()
	r := render(t, append(slices.Clone(threeValues), "--set", "networkPolicy.enabled=true",
		"--set-json", "networkPolicy.public.from=[]", "--set-json", "networkPolicy.metrics.from=[]")...)
	var np networkingv1.NetworkPolicy
	r.one(t, "NetworkPolicy", fullname, &np)
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("%d ingress rules, want 2", len(np.Spec.Ingress))
	}
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) != 0 {
			t.Errorf("port %s: from %+v, want no from (every source)", rule.Ports[0].Port.String(), rule.From)
		}
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Egress) != 0 {
		t.Errorf("policy types %v egress %+v, want ingress only", np.Spec.PolicyTypes, np.Spec.Egress)
	}
}

// monitoring objects, decoded leniently (their CRDs are not in k8s.io/api).
type serviceMonitor struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

func decodeLenient(t *testing.T, r rendered, kind string, out any) {
	t.Helper()
	for _, d := range r.docs {
		if d.kind == kind {
			if err := yaml.Unmarshal(d.raw, out); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			return
		}
	}
	t.Fatalf("no %s rendered; got %v", kind, r.kinds())
}

// TestObservability: ServiceMonitor, PrometheusRule and dashboard, each on
// its own toggle.
func TestObservability(t *testing.T) {
	t.Parallel()
	toggles := map[string]string{
		"serviceMonitor.enabled": "ServiceMonitor/" + fullname,
		"prometheusRule.enabled": "PrometheusRule/" + fullname,
		"dashboard.enabled":      "ConfigMap/" + fullname + "-dashboard",
	}
	for toggle := range toggles {
		t.Run(toggle, func(t *testing.T) {
			t.Parallel()
			r := render(t, append(slices.Clone(threeValues), "--set", toggle+"=true")...)
			for other, o := range toggles {
				kind, name, _ := strings.Cut(o, "/")
				if got, want := r.has(kind, name), other == toggle; got != want {
					t.Errorf("%s=true: %s rendered %v, want %v", toggle, o, got, want)
				}
			}
		})
	}

	r := render(t, ciValues("production")...)

	var sm serviceMonitor
	decodeLenient(t, r, "ServiceMonitor", &sm)
	dep := r.deployment(t)
	if sm.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v: additionalLabels missing", sm.Metadata.Labels)
	}
	if !maps.Equal(sm.Spec.Selector.MatchLabels, dep.Spec.Selector.MatchLabels) || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{namespace}) {
		t.Errorf("ServiceMonitor selects %v in %v", sm.Spec.Selector.MatchLabels, sm.Spec.NamespaceSelector.MatchNames)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Interval != "15s" {
		t.Errorf("ServiceMonitor endpoints %+v, want admin /metrics every 15s", sm.Spec.Endpoints)
	}

	var pr prometheusRule
	decodeLenient(t, r, "PrometheusRule", &pr)
	if pr.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule labels %v: additionalLabels missing", pr.Metadata.Labels)
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(rule.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s", rule.Alert, a)
				}
			}
			if want := "/docs/operations.md#" + strings.ToLower(rule.Alert); !strings.HasSuffix(rule.Annotations["runbook_url"], want) {
				t.Errorf("alert %s: runbook_url %q, want it to end in %s", rule.Alert, rule.Annotations["runbook_url"], want)
			}
			if sev := rule.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("alert %s: severity %q", rule.Alert, sev)
			}
			if rule.Labels["team"] != "integrations" {
				t.Errorf("alert %s: alertLabels not applied: %v", rule.Alert, rule.Labels)
			}
			if sel := fmt.Sprintf(`job=%q,namespace=%q`, fullname, namespace); !strings.Contains(rule.Expr, sel) {
				t.Errorf("alert %s: expr %q does not select %s", rule.Alert, rule.Expr, sel)
			}
			if strings.Contains(rule.Expr, "{{") || strings.Contains(rule.Expr, "<no value>") {
				t.Errorf("alert %s: unrendered template in %q", rule.Alert, rule.Expr)
			}
			if _, err := time.ParseDuration(rule.For); rule.For != "" && err != nil {
				t.Errorf("alert %s: for %q: %v", rule.Alert, rule.For, err)
			}
		}
	}
	wantAlerts := []string{
		"DatagridRelayDeliveriesQuarantined", "DatagridRelayDeliveriesRefused", "DatagridRelayDeliveriesUnavailable",
		"DatagridRelayDown", "DatagridRelayNATSDisconnected", "DatagridRelayNoDeliveries", "DatagridRelayNoSigningSecret",
		"DatagridRelayNotReady", "DatagridRelayOverloaded", "DatagridRelayPodNotReady", "DatagridRelayPublishLatencyHigh",
		"DatagridRelayReadinessFlapping", "DatagridRelayReconcileFailing", "DatagridRelayRegistrationUnhealthy",
		"DatagridRelaySecretOld", "DatagridRelayStreamUnavailable",
	}
	sort.Strings(alerts)
	if !slices.Equal(alerts, wantAlerts) {
		t.Errorf("alerts %v, want %v", alerts, wantAlerts)
	}

	// The dashboard ConfigMap carries the sidecar label and the JSON file,
	// made this release's (TestDashboardPerRelease).
	var cm corev1.ConfigMap
	r.one(t, "ConfigMap", fullname+"-dashboard", &cm)
	if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Datagrid" {
		t.Errorf("dashboard labels %v annotations %v", cm.Labels, cm.Annotations)
	}
	file, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "datagrid-relay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]any
	if err := json.Unmarshal(file, &want); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if len(cm.Data) != 1 {
		t.Fatalf("dashboard ConfigMap keys %v, want one file", slices.Collect(maps.Keys(cm.Data)))
	}
	for _, v := range cm.Data {
		if err := json.Unmarshal([]byte(v), &got); err != nil {
			t.Fatalf("dashboard in the ConfigMap: %v", err)
		}
	}
	for _, k := range []string{"uid", "title", "links"} {
		delete(want, k)
		delete(got, k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dashboard in the ConfigMap differs from dashboards/datagrid-relay.json beyond uid, title and links")
	}
}

// TestNoDeliveriesAlertToggle: the quiet-period alert can be turned off and
// its window set.
func TestNoDeliveriesAlertToggle(t *testing.T) {
	t.Parallel()
	on := render(t, append(slices.Clone(threeValues), "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.noDeliveries.for=3h")...)
	if !strings.Contains(on.text, "DatagridRelayNoDeliveries") || !strings.Contains(on.text, "> 10800") {
		t.Error("DatagridRelayNoDeliveries missing or not after 10800 s (3h)")
	}
	off := render(t, append(slices.Clone(threeValues), "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.noDeliveries.enabled=false")...)
	if strings.Contains(off.text, "DatagridRelayNoDeliveries") {
		t.Error("DatagridRelayNoDeliveries rendered although disabled")
	}
}

// TestChecksumsRollPods: a configuration or secret change changes the pod
// template.
func TestChecksumsRollPods(t *testing.T) {
	t.Parallel()
	ann := func(args ...string) map[string]string {
		return render(t, append(slices.Clone(threeValues), args...)...).deployment(t).Spec.Template.Annotations
	}
	base := ann()
	cfg := ann("--set", "config.logLevel=debug")
	sec := ann("--set", "datagrid.apiKey=another")
	if base["checksum/config"] == cfg["checksum/config"] {
		t.Error("checksum/config unchanged by a config change")
	}
	if base["checksum/secret"] != cfg["checksum/secret"] {
		t.Error("checksum/secret changed by a config change")
	}
	if base["checksum/secret"] == sec["checksum/secret"] {
		t.Error("checksum/secret unchanged by a new API key")
	}
}

// TestImage: the tag defaults to appVersion; a digest wins.
func TestImage(t *testing.T) {
	t.Parallel()
	_, appVersion := chartVersions(t)
	cases := map[string]struct {
		args []string
		want string
	}{
		"default": {nil, "ghcr.io/datagrid-relay/relay:" + appVersion},
		"tag":     {[]string{"--set", "image.tag=1.2.3"}, "ghcr.io/datagrid-relay/relay:1.2.3"},
		"digest": {[]string{"--set", "image.digest=sha256:" + strings.Repeat("a", 64)},
			"ghcr.io/datagrid-relay/relay@sha256:" + strings.Repeat("a", 64)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := render(t, append(slices.Clone(threeValues), tc.args...)...)
			if got := container(t, r.deployment(t).Spec.Template.Spec, "relay").Image; got != tc.want {
				t.Errorf("image %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNATSTLS: the TLS files are mounted from their Secret and named in the
// environment.
func TestNATSTLS(t *testing.T) {
	t.Parallel()
	r := render(t, append(slices.Clone(threeValues), "--set", "nats.tls.enabled=true", "--set", "nats.tls.secretName=nats-client-tls",
		"--set", "nats.tls.certKey=tls.crt", "--set", "nats.tls.keyKey=tls.key")...)
	cm := r.configMap(t)
	for k, want := range map[string]string{
		"NATS_TLS_CA":   "/etc/relay/nats-tls/ca.crt",
		"NATS_TLS_CERT": "/etc/relay/nats-tls/tls.crt",
		"NATS_TLS_KEY":  "/etc/relay/nats-tls/tls.key",
	} {
		if cm[k] != want {
			t.Errorf("%s = %q, want %q", k, cm[k], want)
		}
	}
	pod := r.deployment(t).Spec.Template.Spec
	found := false
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "nats-client-tls" {
			found = true
			if len(v.Secret.Items) != 3 {
				t.Errorf("TLS volume items %+v, want 3", v.Secret.Items)
			}
		}
	}
	if !found {
		t.Error("no volume from Secret nats-client-tls")
	}
}

// TestLongReleaseName: names stay within 63 characters.
func TestLongReleaseName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("r", 53) // helm's longest release name
	out, err := exec.Command(helm(t), "template", long, chartDir, "--kube-version", kubeVersion,
		"--api-versions", "monitoring.coreos.com/v1", "-f", filepath.Join(chartDir, "ci", "production-values.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	var r rendered
	for _, part := range docSep.Split(string(out), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(part), &m); err != nil || len(m) == 0 {
			continue
		}
		name, _ := nestedMap(m, "metadata")["name"].(string)
		r.docs = append(r.docs, doc{kind: fmt.Sprint(m["kind"]), name: name})
	}
	if len(r.docs) < 10 {
		t.Fatalf("rendered %v", r.kinds())
	}
	for _, d := range r.docs {
		if len(d.name) > 63 || strings.HasSuffix(d.name, "-") {
			t.Errorf("%s name %q: longer than 63 or ends in -", d.kind, d.name)
		}
	}
}

// TestSchemaRejects: values.schema.json refuses typos and wrong types.
func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"replicaCount as a string", []string{"--set-string", "replicaCount=two"}, "/replicaCount"},
		{"replicaCount as a float", []string{"--set", "replicaCount=1.5"}, "/replicaCount"},
		{"typo at the top", []string{"--set", "replicaCont=2"}, "replicaCont"},
		{"typo in ingress", []string{"--set", "ingress.hosst=relay.example.com"}, "hosst"},
		{"typo in nats", []string{"--set", "nats.urls=nats://x:4222"}, "urls"},
		{"typo in config", []string{"--set", "config.logLevl=debug"}, "logLevl"},
		{"typo in a probe", []string{"--set", "readinessProbe.periodSecond=5"}, "periodSecond"},
		{"unknown mode", []string{"--set", "mode=dynamic"}, "/mode"},
		{"plain http public URL", []string{"--set", "publicUrl=http://relay.example.com/hook"}, "/publicUrl"},
		{"public URL with a query", []string{"--set", "publicUrl=https://relay.example.com/hook?x=1"}, "/publicUrl"},
		{"unknown NATS auth", []string{"--set", "nats.auth.type=kerberos"}, "/nats/auth/type"},
		{"bad log level", []string{"--set", "config.logLevel=verbose"}, "/config/logLevel"},
		{"bad duration", []string{"--set", "config.publishTimeout=5 seconds"}, "/config/publishTimeout"},
		{"bad stream replicas", []string{"--set", "config.streamReplicas=2"}, "/config/streamReplicas"},
		{"enabled as a string", []string{"--set-string", "ingress.enabled=yes"}, "/ingress/enabled"},
		{"event type not a subject token", []string{"--set", "datagrid.events[0]=Batch Prediction"}, "/datagrid/events/0"},
		{"ratio above 1", []string{"--set", "prometheusRule.unavailableRatio=5"}, "/prometheusRule/unavailableRatio"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplate(t, append(slices.Clone(threeValues), tc.args...)...)
			if err == nil {
				t.Fatal("helm template succeeded, want a schema error")
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want a schema error naming %q", err, tc.wantErr)
			}
		})
	}
}

// TestTemplateRejects: combinations the schema cannot express fail with a
// message that says what to set.
func TestTemplateRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no API key", []string{"--set", "publicUrl=https://r.example.com/h", "--set", "nats.url=nats://n:4222"}, "datagrid.apiKey or existingSecret"},
		{"no public URL", []string{"--set", "datagrid.apiKey=k", "--set", "nats.url=nats://n:4222"}, "publicUrl is required"},
		{"no NATS URL", []string{"--set", "datagrid.apiKey=k", "--set", "publicUrl=https://r.example.com/h"}, "nats.url is required"},
		{"static without secret", []string{"--set", "mode=static", "--set", "nats.url=nats://n:4222"}, "webhookSecret or existingSecret"},
		{"hook in static mode", []string{"--set", "mode=static", "--set", "webhookSecret=s", "--set", "nats.url=nats://n:4222", "--set", "deregisterHook.enabled=true"}, "deregisterHook.enabled needs mode register"},
		{"ingress without URL", []string{"--set", "mode=static", "--set", "webhookSecret=s", "--set", "nats.url=nats://n:4222", "--set", "ingress.enabled=true"}, "publicUrl is required"},
		{"grace equal to shutdown", append(slices.Clone(threeValues), "--set", "terminationGracePeriodSeconds=20"), "must be longer"},
		{"grace eaten by preStop", append(slices.Clone(threeValues), "--set", "preStopSleepSeconds=10"), "must be longer"},
		{"password without value", append(slices.Clone(threeValues), "--set", "nats.auth.type=userPassword", "--set", "nats.auth.user=u"), "nats.auth.password"},
		{"password without user", append(slices.Clone(threeValues), "--set", "nats.auth.type=userPassword", "--set", "nats.auth.password=p"), "nats.auth.user"},
		{"TLS without secret", append(slices.Clone(threeValues), "--set", "nats.tls.enabled=true"), "nats.tls.secretName"},
		{"TLS cert without key", append(slices.Clone(threeValues), "--set", "nats.tls.enabled=true", "--set", "nats.tls.secretName=t", "--set", "nats.tls.certKey=tls.crt"), "go together"},
		{"HPA max below min", append(slices.Clone(threeValues), "--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=3", "--set", "autoscaling.maxReplicas=2"), "maxReplicas"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplate(t, tc.args...)
			if err == nil {
				t.Fatal("helm template succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// chartVersions reads version and appVersion from Chart.yaml.
func chartVersions(t *testing.T) (version, appVersion string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		APIVersion string `json:"apiVersion"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.APIVersion != "v2" || c.Version == "" || c.AppVersion == "" {
		t.Fatalf("Chart.yaml: apiVersion %q version %q appVersion %q, want v2 and both versions", c.APIVersion, c.Version, c.AppVersion)
	}
	return c.Version, c.AppVersion
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func servicePort(svc corev1.Service, name string) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	return 0
}

func nestedMap(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, _ := m[k].(map[string]any)
		m = next
	}
	return m
}

// mapSubset reports whether every entry of sub is in super.
func mapSubset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

func boolString(b *bool) string {
	if b == nil {
		return "unset"
	}
	return fmt.Sprint(*b)
}
