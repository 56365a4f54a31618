package test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// TestCapabilities: objects whose API the cluster lacks, and the preStop
// sleep on a cluster older than 1.30, fail the render with the chart's own
// message naming the value to change; capabilitiesCheck=false renders them
// anyway (helm lint, offline renders).
func TestCapabilities(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		apis []string
		args []string
		want string // "" renders
	}{
		{"PrometheusRule without the monitoring API", nil, []string{"--set", "prometheusRule.enabled=true"},
			"prometheusRule.enabled needs the monitoring.coreos.com/v1 API"},
		{"ServiceMonitor without the monitoring API", nil, []string{"--set", "serviceMonitor.enabled=true"},
			"serviceMonitor.enabled needs the monitoring.coreos.com/v1 API"},
		{"HTTPRoute without the Gateway API", []string{"monitoring.coreos.com/v1"},
			[]string{"--set", "httpRoute.enabled=true", "--set", "httpRoute.parentRefs[0].name=public"},
			"httpRoute.enabled needs the gateway.networking.k8s.io/v1 API"},
		{"monitoring with the API", []string{"monitoring.coreos.com/v1"},
			[]string{"--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true"}, ""},
		{"check off", nil,
			[]string{"--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true", "--set", "capabilitiesCheck=false"}, ""},
		{"preStop sleep on 1.29", clusterAPIs, []string{"--kube-version", "1.29.5", "--set", "preStopSleepSeconds=5"},
			"preStopSleepSeconds needs the preStop sleep action of Kubernetes >= 1.30"},
		{"preStop sleep on 1.30", clusterAPIs, []string{"--kube-version", "1.30.0", "--set", "preStopSleepSeconds=5"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplateAPIs(t, c.apis, append(slices.Clone(threeValues), c.args...)...)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v, want a render", err)
			case c.want != "" && err == nil:
				t.Errorf("rendered; want an error %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

// TestChartEscapeHatches: commonLabels, extra volumes, HPA behavior,
// HTTPRoute, topology spread by pod-template-hash, GOMEMLIMIT, the memory
// budget, the PDB's eviction policy, the hook's clean-up.
func TestChartEscapeHatches(t *testing.T) {
	t.Parallel()
	r := render(t, append(slices.Clone(threeValues),
		"--set", "commonLabels.team=payments",
		"--set-json", `extraVolumes=[{"name":"ca","configMap":{"name":"corp-ca"}}]`,
		"--set-json", `extraVolumeMounts=[{"name":"ca","mountPath":"/etc/corp-ca","readOnly":true}]`,
		"--set", "autoscaling.enabled=true",
		"--set-json", `autoscaling.behavior={"scaleDown":{"stabilizationWindowSeconds":600}}`,
		"--set", "httpRoute.enabled=true", "--set", "httpRoute.parentRefs[0].name=public",
		"--set", "deregisterHook.enabled=true",
		"--set", "config.maxInflightBytes=67108864",
	)...)
	for _, d := range r.docs {
		labels := nestedMap(d.generic, "metadata", "labels")
		if labels["team"] != "payments" {
			t.Errorf("%s/%s: labels %v, want commonLabels", d.kind, d.name, labels)
		}
	}
	dep := r.deployment(t)
	if dep.Spec.Template.Labels["team"] != "payments" || dep.Spec.Selector.MatchLabels["team"] != "" {
		t.Errorf("commonLabels: pod labels %v, selector %v", dep.Spec.Template.Labels, dep.Spec.Selector.MatchLabels)
	}
	pod := dep.Spec.Template.Spec
	c := container(t, pod, "relay")
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "ca" && v.ConfigMap != nil }) ||
		!slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "ca" && m.MountPath == "/etc/corp-ca" }) {
		t.Errorf("extra volume or mount missing: %+v %+v", pod.Volumes, c.VolumeMounts)
	}
	var gomem bool
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			gomem = e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
				e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" && e.ValueFrom.ResourceFieldRef.ContainerName == "relay"
		}
	}
	if !gomem {
		t.Errorf("no GOMEMLIMIT from limits.memory in %+v", c.Env)
	}
	if got := r.configMap(t)["RELAY_MAX_INFLIGHT_BYTES"]; got != "67108864" {
		t.Errorf("RELAY_MAX_INFLIGHT_BYTES %q, want 67108864", got)
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if !slices.Equal(tsc.MatchLabelKeys, []string{"pod-template-hash"}) {
			t.Errorf("topology spread %+v: want matchLabelKeys [pod-template-hash]", tsc)
		}
	}
	var hpa autoscalingv2.HorizontalPodAutoscaler
	r.one(t, "HorizontalPodAutoscaler", fullname, &hpa)
	if hpa.Spec.Behavior == nil || hpa.Spec.Behavior.ScaleDown == nil || *hpa.Spec.Behavior.ScaleDown.StabilizationWindowSeconds != 600 {
		t.Errorf("HPA behavior %+v", hpa.Spec.Behavior)
	}
	var pdb policyv1.PodDisruptionBudget
	r.one(t, "PodDisruptionBudget", fullname, &pdb)
	if pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		t.Errorf("PDB unhealthyPodEvictionPolicy %v, want AlwaysAllow", pdb.Spec.UnhealthyPodEvictionPolicy)
	}
	var job batchv1.Job
	r.one(t, "Job", strings.TrimSuffix(fullname, "-")+"-deregister", &job)
	if job.Spec.TTLSecondsAfterFinished == nil || *job.Spec.TTLSecondsAfterFinished != 600 {
		t.Errorf("hook Job ttlSecondsAfterFinished %v, want 600", job.Spec.TTLSecondsAfterFinished)
	}
	if p := job.Annotations["helm.sh/hook-delete-policy"]; p != "before-hook-creation,hook-succeeded" {
		t.Errorf("hook delete policy %q", p)
	}
	var route struct {
		Spec struct {
			ParentRefs []map[string]any `json:"parentRefs"`
			Hostnames  []string         `json:"hostnames"`
			Rules      []struct {
				Matches []struct {
					Path struct{ Type, Value string } `json:"path"`
				} `json:"matches"`
				BackendRefs []struct {
					Name string `json:"name"`
					Port int    `json:"port"`
				} `json:"backendRefs"`
			} `json:"rules"`
		} `json:"spec"`
	}
	decodeLenient(t, r, "HTTPRoute", &route)
	if len(route.Spec.Hostnames) != 1 || route.Spec.Hostnames[0] != "relay.example.com" || len(route.Spec.Rules) != 1 ||
		route.Spec.Rules[0].Matches[0].Path.Value != "/webhooks/datagrid" || route.Spec.Rules[0].Matches[0].Path.Type != "Exact" ||
		route.Spec.Rules[0].BackendRefs[0].Name != fullname || route.Spec.Rules[0].BackendRefs[0].Port != 8080 {
		t.Errorf("HTTPRoute %+v, want relay.example.com, exactly /webhooks/datagrid, to the Service's http port", route.Spec)
	}

	// On Kubernetes 1.26 the fields it does not know are left out.
	old := render(t, append(slices.Clone(threeValues), "--kube-version", "1.26.0", "--set", "replicaCount=2")...)
	var oldDep appsv1.Deployment
	old.one(t, "Deployment", fullname, &oldDep)
	for _, tsc := range oldDep.Spec.Template.Spec.TopologySpreadConstraints {
		if len(tsc.MatchLabelKeys) != 0 {
			t.Errorf("1.26: topology spread %+v has matchLabelKeys", tsc)
		}
	}
	var oldPDB policyv1.PodDisruptionBudget
	old.one(t, "PodDisruptionBudget", fullname, &oldPDB)
	if oldPDB.Spec.UnhealthyPodEvictionPolicy != nil {
		t.Errorf("1.26: PDB has unhealthyPodEvictionPolicy")
	}
}

// TestIngressBodySize: the Ingress lets through bodies up to the relay's
// limit (ingress-nginx's default is 1 MiB), unless the user set it.
func TestIngressBodySize(t *testing.T) {
	t.Parallel()
	ann := func(args ...string) map[string]string {
		r := render(t, append(slices.Clone(threeValues), append([]string{"--set", "ingress.enabled=true"}, args...)...)...)
		var ing networkingv1.Ingress
		r.one(t, "Ingress", fullname, &ing)
		return ing.Annotations
	}
	const key = "nginx.ingress.kubernetes.io/proxy-body-size"
	if got := ann("--set", "config.maxBodyBytes=4194304")[key]; got != "4194304" {
		t.Errorf("%s %q, want 4194304 (config.maxBodyBytes)", key, got)
	}
	if got := ann("--set", "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=8m")[key]; got != "8m" {
		t.Errorf("%s %q, want the user's 8m", key, got)
	}
}

// TestRemovedValues: values of chart 0.1.0 that are gone fail with a
// message saying what replaced them, rather than a bare schema error or
// silence.
func TestRemovedValues(t *testing.T) {
	t.Parallel()
	for set, want := range map[string]string{
		"startupProbe.enabled=true":       "startupProbe was removed in chart 0.2.0",
		"prometheusRule.refusedRatio=0.1": "prometheusRule.refusedRatio was removed in chart 0.2.0",
	} {
		_, err := helmTemplate(t, append(slices.Clone(threeValues), "--set", set)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: got %v, want %q", set, err, want)
		}
	}
}

// TestInflightBudgetBelowBodyLimit: a budget smaller than one body fails.
func TestInflightBudgetBelowBodyLimit(t *testing.T) {
	t.Parallel()
	_, err := helmTemplate(t, append(slices.Clone(threeValues), "--set", "config.maxInflightBytes=1000")...)
	if err == nil || !strings.Contains(err.Error(), "config.maxInflightBytes (1000) must be at least config.maxBodyBytes (1048576)") {
		t.Errorf("got %v, want the budget refused", err)
	}
}

// TestDockerfilePinned: every base image of the relay's image is pinned by
// digest, and the builder's Go is the release go.mod names (the official
// image sets GOTOOLCHAIN=local, so it would not fetch a newer one).
func TestDockerfilePinned(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	from := regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`)
	pinned := regexp.MustCompile(`^[^@\s]+:[^@\s]+@sha256:[a-f0-9]{64}$`)
	n := 0
	for _, m := range from.FindAllSubmatch(b, -1) {
		img := string(m[1])
		if img == "scratch" {
			continue
		}
		n++
		if !pinned.MatchString(img) {
			t.Errorf("FROM %s: want image:tag@sha256:<digest>", img)
		}
		if strings.HasPrefix(img, "golang:") && goVersion != nil && !strings.HasPrefix(img, "golang:"+string(goVersion[1])+"@") {
			t.Errorf("FROM %s: want golang:%s (go.mod)", img, goVersion[1])
		}
	}
	if n < 2 {
		t.Errorf("found %d base images in the Dockerfile, want the builder and the runtime", n)
	}
}
