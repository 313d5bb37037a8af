package test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		ClusterIP      string `yaml:"clusterIP"`
		ServiceName    string `yaml:"serviceName"`
		Replicas       int    `yaml:"replicas"`
		MaxUnavailable int    `yaml:"maxUnavailable"`
		Ports          []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"`
		Template struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	Containers []struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Env     []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"env"`
		ReadinessProbe struct {
			HTTPGet struct {
				Path string `yaml:"path"`
				Port int    `yaml:"port"`
			} `yaml:"httpGet"`
		} `yaml:"readinessProbe"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	} `yaml:"containers"`
}

// argValue returns the value following flag in args.
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// TestDeployKubernetes checks deploy/kubernetes/raftproxy.yaml: the flags
// raftproxy is given exist; redis and raftproxy share the socket and the
// RDB directory; members advertise the names the headless Service gives
// them; the init Job names every member and runs deploy/init-cluster.sh
// itself (the compose topology test runs that script on real nodes); the
// disruption budget keeps a majority; peers authenticate.
func TestDeployKubernetes(t *testing.T) {
	d := loadDeployment(t)
	flags := raftproxyFlags(t)
	b, err := os.ReadFile(d.path("deploy", "kubernetes", "raftproxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("raftproxy.yaml: %v", err)
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	sts, ok := objs["StatefulSet/raftproxy"]
	if !ok {
		t.Fatalf("no StatefulSet/raftproxy in %v", objs)
	}
	headless, ok := objs["Service/"+sts.Spec.ServiceName]
	if !ok || headless.Spec.ClusterIP != "None" {
		t.Fatalf("the StatefulSet's service %q is not a headless Service", sts.Spec.ServiceName)
	}
	var redisArgs, proxyArgs []string
	mounts := map[string]map[string]string{}
	for _, c := range sts.Spec.Template.Spec.Containers {
		mounts[c.Name] = map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[c.Name][m.Name] = m.MountPath
		}
		switch c.Name {
		case "redis":
			if c.Image != "redis:7.0.15" {
				t.Errorf("redis container image %s, want redis:7.0.15", c.Image)
			}
			redisArgs = c.Command
		case "raftproxy":
			proxyArgs = c.Args
			for _, a := range c.Args {
				if strings.HasPrefix(a, "--") && !flags[a] {
					t.Errorf("raftproxy container: raftproxy has no flag %s", a)
				}
			}
			if p := c.ReadinessProbe.HTTPGet; p.Path != "/readyz" || !strings.HasSuffix(argValue(c.Args, "--metrics-listen"), fmt.Sprintf(":%d", p.Port)) {
				t.Errorf("readiness probe %+v does not ask --metrics-listen's /readyz", p)
			}
		}
	}
	if sock := argValue(redisArgs, "--unixsocket"); sock == "" || sock != argValue(proxyArgs, "--redis") {
		t.Errorf("redis listens on %q, raftproxy dials %q", sock, argValue(proxyArgs, "--redis"))
	}
	// raftproxy reads the RDB files redis writes, at the path redis
	// reports: the same volume at the same path in both containers.
	if dir := argValue(redisArgs, "--dir"); mounts["redis"]["redis"] != dir || mounts["raftproxy"]["redis"] != dir {
		t.Errorf("redis's --dir %s is not the same volume at the same path in both containers: %v", dir, mounts)
	}
	if argValue(proxyArgs, "--peer-secret-file") == "" {
		t.Error("peers do not authenticate (no --peer-secret-file)")
	}
	clientPort := regexp.MustCompile(`:(\d+)$`).FindStringSubmatch(argValue(proxyArgs, "--listen"))
	if adv := argValue(proxyArgs, "--advertise-addr"); clientPort == nil || adv != "$(POD_NAME)."+sts.Spec.ServiceName+":"+clientPort[1] {
		t.Errorf("--advertise-addr %s, want $(POD_NAME).%s:<client port>", adv, sts.Spec.ServiceName)
	}

	cm, ok := objs["ConfigMap/raftproxy-init"]
	script, err := os.ReadFile(d.path("deploy", "init-cluster.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !ok || cm.Data["init-cluster.sh"] != string(script) {
		t.Error("ConfigMap raftproxy-init does not hold deploy/init-cluster.sh as it is")
	}
	var nodes string
	job := objs["Job/raftproxy-init"]
	for _, c := range job.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "NODES" {
				nodes = e.Value
			}
		}
	}
	var want []string
	for i := range sts.Spec.Replicas {
		want = append(want, fmt.Sprintf("raftproxy-%d.%s:%s", i, sts.Spec.ServiceName, clientPort[1]))
	}
	if nodes != strings.Join(want, " ") {
		t.Errorf("the init Job's NODES = %q, want %q", nodes, strings.Join(want, " "))
	}
	pdb, ok := objs["PodDisruptionBudget/raftproxy"]
	if !ok || pdb.Spec.MaxUnavailable < 1 || sts.Spec.Replicas-pdb.Spec.MaxUnavailable < sts.Spec.Replicas/2+1 {
		t.Errorf("the disruption budget (maxUnavailable %d of %d) does not keep a majority", pdb.Spec.MaxUnavailable, sts.Spec.Replicas)
	}
}
