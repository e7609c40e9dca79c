package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/fleet-exporter/fleet_exporter/config"
)

const kubeDir = "kubernetes"

// podMonitor is the part of the Prometheus Operator's PodMonitor (a CRD,
// not in k8s.io/api) the manifest uses; decoding is strict, so a field not
// listed here is an error.
type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		JobLabel string `json:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		SampleLimit         int `json:"sampleLimit"`
		PodMetricsEndpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// manifests holds every object of deploy/kubernetes, decoded strictly.
type manifests struct {
	sts        *appsv1.StatefulSet
	services   []*corev1.Service
	configMaps []*corev1.ConfigMap
	pdb        *policyv1.PodDisruptionBudget
	netpol     *networkingv1.NetworkPolicy
	podMon     *podMonitor
}

// loadManifests decodes every document of every YAML file against its
// Kubernetes API type; unknown fields are errors.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	var m manifests
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := k8syaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 StatefulSet":
				if m.sts != nil {
					t.Fatalf("%s: a second StatefulSet", f)
				}
				m.sts = &appsv1.StatefulSet{}
				obj = m.sts
			case "v1 Service":
				s := &corev1.Service{}
				m.services = append(m.services, s)
				obj = s
			case "v1 ConfigMap":
				c := &corev1.ConfigMap{}
				m.configMaps = append(m.configMaps, c)
				obj = c
			case "policy/v1 PodDisruptionBudget":
				m.pdb = &policyv1.PodDisruptionBudget{}
				obj = m.pdb
			case "networking.k8s.io/v1 NetworkPolicy":
				m.netpol = &networkingv1.NetworkPolicy{}
				obj = m.netpol
			case "monitoring.coreos.com/v1 PodMonitor":
				m.podMon = &podMonitor{}
				obj = m.podMon
			default:
				t.Fatalf("%s document %d: unexpected %s %s", f, i, head.APIVersion, head.Kind)
			}
			if err := k8syaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, head.Kind, err)
			}
		}
	}
	if m.sts == nil || len(m.services) != 2 || len(m.configMaps) != 1 || m.pdb == nil || m.netpol == nil || m.podMon == nil {
		t.Fatalf("want a StatefulSet, two Services, a ConfigMap, a PodDisruptionBudget, a NetworkPolicy and a PodMonitor; got %+v", m)
	}
	return m
}

// selects reports whether a selector's labels all appear in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// expandEnv replaces $(NAME) as the kubelet does, with example values.
func expandEnv(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// flagValue returns the value of --name=value among args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	sts := m.sts
	podLabels := sts.Spec.Template.Labels
	if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("StatefulSet selector %v does not select its pod labels %v", sts.Spec.Selector, podLabels)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 3 {
		t.Errorf("StatefulSet replicas %v, want at least 3 for HA", sts.Spec.Replicas)
	}
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(sts.Spec.Template.Spec.Containers))
	}
	c := sts.Spec.Template.Spec.Containers[0]

	// Ports by name, and by number and protocol.
	ports := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	portOf := func(what string, ref intstr.IntOrString, proto corev1.Protocol) {
		t.Helper()
		if ref.Type == intstr.String {
			p, ok := ports[ref.StrVal]
			if !ok {
				t.Errorf("%s refers to port %q, which the container does not declare", what, ref.StrVal)
			} else if proto != "" && p.Protocol != proto {
				t.Errorf("%s: port %q is %s, want %s", what, ref.StrVal, p.Protocol, proto)
			}
			return
		}
		for _, p := range c.Ports {
			if p.ContainerPort == ref.IntVal && (proto == "" || p.Protocol == proto) {
				return
			}
		}
		t.Errorf("%s refers to port %d/%s, which the container does not declare", what, ref.IntVal, proto)
	}

	// Services: the gossip one is headless, publishes not-ready pods and
	// is the StatefulSet's serviceName.
	var gossipSvc *corev1.Service
	for _, s := range m.services {
		if !selects(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s selector %v does not select the pods %v", s.Name, s.Spec.Selector, podLabels)
		}
		for _, p := range s.Spec.Ports {
			portOf("Service "+s.Name+" port "+p.Name, p.TargetPort, p.Protocol)
		}
		if s.Name == sts.Spec.ServiceName {
			gossipSvc = s
		}
	}
	if gossipSvc == nil {
		t.Fatalf("no Service named %q (the StatefulSet's serviceName)", sts.Spec.ServiceName)
	}
	if gossipSvc.Spec.ClusterIP != corev1.ClusterIPNone || !gossipSvc.Spec.PublishNotReadyAddresses {
		t.Errorf("gossip Service %s: clusterIP %q, publishNotReadyAddresses %v; want headless and publishing not-ready pods (a pod is ready only after it found its peers)",
			gossipSvc.Name, gossipSvc.Spec.ClusterIP, gossipSvc.Spec.PublishNotReadyAddresses)
	}

	// The container's flags agree with its ports, volumes and the
	// ConfigMap.
	env := map[string]string{"POD_NAME": sts.Name + "-0", "POD_NAMESPACE": "monitoring", "POD_IP": "10.1.2.3"}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Errorf("env %s: want a fieldRef", e.Name)
		}
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expandEnv(a, env)
		if strings.Contains(args[i], "$(") {
			t.Errorf("argument %q uses a variable the container does not define", a)
		}
	}
	checkAddr := func(flag, portName string) {
		t.Helper()
		v, ok := flagValue(args, flag)
		if !ok {
			t.Errorf("container has no --%s", flag)
			return
		}
		_, port, err := net.SplitHostPort(v)
		n, _ := strconv.Atoi(port)
		if err != nil || ports[portName].ContainerPort != int32(n) {
			t.Errorf("--%s=%s does not match container port %s (%d)", flag, v, portName, ports[portName].ContainerPort)
		}
	}
	checkAddr("web.listen-address", "metrics")
	checkAddr("cluster.listen-address", "gossip-tcp")
	checkAddr("cluster.advertise-address", "gossip-udp")
	peer, ok := flagValue(args, "cluster.peer")
	if !ok {
		t.Error("container has no --cluster.peer")
	} else {
		host, port, _ := net.SplitHostPort(peer)
		if !strings.HasPrefix(host, gossipSvc.Name+".") {
			t.Errorf("--cluster.peer=%s is not the gossip Service %s", peer, gossipSvc.Name)
		}
		found := false
		for _, p := range gossipSvc.Spec.Ports {
			found = found || strconv.Itoa(int(p.Port)) == port
		}
		if !found {
			t.Errorf("--cluster.peer port %s is not a port of Service %s", port, gossipSvc.Name)
		}
	}
	if name, _ := flagValue(args, "cluster.name"); name != env["POD_NAME"] {
		t.Errorf("--cluster.name=%s, want the pod name (a stable member name)", name)
	}

	// The config file is the ConfigMap's key under its mount.
	cfgPath, ok := flagValue(args, "config.file")
	if !ok {
		t.Fatal("container has no --config.file")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	// Each claim template is a volume of the pod, named after the claim.
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		vols[pvc.Name] = corev1.Volume{Name: pvc.Name}
	}
	var cfgData string
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			t.Errorf("volumeMount %s has no volume", vm.Name)
			continue
		}
		if v.ConfigMap == nil || filepath.Dir(cfgPath) != vm.MountPath {
			continue
		}
		for _, cm := range m.configMaps {
			if cm.Name == v.ConfigMap.Name {
				data, ok := cm.Data[filepath.Base(cfgPath)]
				if !ok {
					t.Errorf("ConfigMap %s has no key %s for --config.file=%s", cm.Name, filepath.Base(cfgPath), cfgPath)
				}
				cfgData = data
			}
		}
	}
	if cfgData == "" {
		t.Fatalf("--config.file=%s is not a key of a mounted ConfigMap", cfgPath)
	}
	if _, err := config.Parse([]byte(cfgData), "configmap.yaml:fleet.yml"); err != nil {
		t.Errorf("the ConfigMap's config does not load: %v", err)
	}
	if sp, ok := flagValue(args, "storage.path"); ok {
		mounted := false
		for _, vm := range c.VolumeMounts {
			mounted = mounted || (vm.MountPath == sp && !vm.ReadOnly)
		}
		if !mounted {
			t.Errorf("--storage.path=%s is not a writable volume: the root filesystem is read-only", sp)
		}
		// A pod volume (emptyDir) dies with the pod, so every rolling
		// update would lose the state the flag is there to keep.
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == sp && !slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(pvc corev1.PersistentVolumeClaim) bool { return pvc.Name == vm.Name }) {
				t.Errorf("--storage.path=%s is on volume %q, not a volumeClaimTemplate: the state is lost whenever the pod is replaced", sp, vm.Name)
			}
		}
	}

	// Probes, hardening, resources.
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/-/ready", "liveness": "/-/healthy"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
			t.Errorf("%s probe %+v, want GET %s", name, p, want)
			continue
		}
		portOf(name+" probe", p.HTTPGet.Port, "")
	}
	sc := c.SecurityContext
	psc := sts.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_RAW"}) {
		t.Errorf("container securityContext %+v: want a read-only root filesystem, no privilege escalation, capabilities ALL dropped and only NET_RAW added", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}

	// PDB, NetworkPolicy, PodMonitor select the pods and name real ports.
	if m.pdb.Spec.Selector == nil || !selects(m.pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods", m.pdb.Spec.Selector)
	}
	if m.pdb.Spec.MaxUnavailable == nil || m.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", m.pdb.Spec.MaxUnavailable)
	}
	if !selects(m.netpol.Spec.PodSelector.MatchLabels, podLabels) {
		t.Errorf("NetworkPolicy podSelector %v does not select the pods", m.netpol.Spec.PodSelector)
	}
	allowed := map[string]bool{}
	for _, rule := range m.netpol.Spec.Ingress {
		fromPeers := len(rule.From) > 0
		for _, f := range rule.From {
			fromPeers = fromPeers && f.PodSelector != nil && selects(f.PodSelector.MatchLabels, podLabels)
		}
		for _, p := range rule.Ports {
			if p.Port == nil || p.Protocol == nil {
				t.Errorf("NetworkPolicy port %+v: want a port and a protocol", p)
				continue
			}
			portOf("NetworkPolicy", *p.Port, *p.Protocol)
			key := fmt.Sprintf("%s/%s", p.Port.String(), *p.Protocol)
			if !fromPeers && p.Port.IntValue() == int(ports["gossip-tcp"].ContainerPort) {
				t.Errorf("NetworkPolicy opens gossip port %s to more than the exporter's pods", key)
			}
			allowed[key] = true
		}
	}
	for _, name := range []string{"gossip-tcp", "gossip-udp", "metrics"} {
		p := ports[name]
		if key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol); !allowed[key] {
			t.Errorf("NetworkPolicy does not allow %s (%s)", name, key)
		}
	}
	if !selects(m.podMon.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PodMonitor selector %v does not select the pods", m.podMon.Spec.Selector.MatchLabels)
	}
	if _, ok := podLabels[m.podMon.Spec.JobLabel]; !ok {
		t.Errorf("PodMonitor jobLabel %q is not a pod label", m.podMon.Spec.JobLabel)
	}
	for _, ep := range m.podMon.Spec.PodMetricsEndpoints {
		portOf("PodMonitor endpoint", intstr.FromString(ep.Port), corev1.ProtocolTCP)
		if ep.Path != "/metrics" {
			t.Errorf("PodMonitor path %q, want /metrics", ep.Path)
		}
	}
	if m.podMon.Spec.SampleLimit <= 0 {
		t.Error("PodMonitor has no sampleLimit")
	}

	t.Run("flags exist in the binary", func(t *testing.T) {
		checkFlagsInBinary(t, args, cfgData)
	})
}

// checkFlagsInBinary builds the exporter and runs it with the container's
// arguments plus --config.check on the ConfigMap's config: an unknown flag,
// a bad flag combination or a config that does not pass preflight fails.
func checkFlagsInBinary(t *testing.T, args []string, cfgData string) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleet_exporter")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "fleet.yml")
	if err := os.WriteFile(cfg, []byte(cfgData), 0o644); err != nil {
		t.Fatal(err)
	}
	run := []string{"--config.check"}
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--config.file="):
			run = append(run, "--config.file="+cfg)
		case !strings.HasPrefix(a, "--"):
			t.Errorf("argument %q is not a --flag=value", a)
		default:
			run = append(run, a)
		}
	}
	out, err := exec.Command(bin, run...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Errorf("fleet_exporter %s: %v\n%s", strings.Join(run, " "), err, out)
	}
	// The binary really rejects what it does not know, so the check above
	// can fail.
	out, err = exec.Command(bin, append(run, "--cluster.no-such-flag=1")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no-such-flag") {
		t.Errorf("an unknown flag was accepted: %v\n%s", err, out)
	}
}
