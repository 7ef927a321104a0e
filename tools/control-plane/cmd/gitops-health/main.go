// gitops-health tells how the two GitOps tools read our objects, with their own code: kstatus (the status
// library of Flux, kpt and cli-utils) and Argo CD's health checks, the Lua snippets of an argocd-cm
// ConfigMap run in gopher-lua with the libraries Argo CD opens for them.
//
//	gitops-health ARGOCD_CM.yaml < list.json
//
// Reads a list of objects ({"items": [...]}) and prints one JSON line per object:
// {"kind", "name", "kstatus", "kstatusMessage", "argocd", "argocdMessage"}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argocd         string `json:"argocd"`
	ArgocdMessage  string `json:"argocdMessage"`
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: gitops-health ARGOCD_CM.yaml < list.json")
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err.Error())
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(text, &cm); err != nil {
		fail(fmt.Sprintf("%s: %v", os.Args[1], err))
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&list); err != nil {
		fail(fmt.Sprintf("reading the objects: %v", err))
	}
	out := json.NewEncoder(os.Stdout)
	for _, item := range list.Items {
		// Kubernetes' own decoding: whole numbers become int64, as kstatus expects.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(item); err != nil {
			fail(fmt.Sprintf("an object of the list: %v", err))
		}
		v := verdict{Kind: u.GetKind(), Name: u.GetName()}
		result, err := status.Compute(u)
		if err != nil {
			fail(fmt.Sprintf("kstatus on %s %s: %v", v.Kind, v.Name, err))
		}
		v.Kstatus, v.KstatusMessage = result.Status.String(), result.Message
		gvk := u.GroupVersionKind()
		key := fmt.Sprintf("resource.customizations.health.%s_%s", gvk.Group, gvk.Kind)
		script, found := cm.Data[key]
		if !found {
			fail(fmt.Sprintf("%s has no %s", os.Args[1], key))
		}
		v.Argocd, v.ArgocdMessage, err = argocdHealth(u, script)
		if err != nil {
			fail(fmt.Sprintf("%s on %s %s: %v", key, v.Kind, v.Name, err))
		}
		if err := out.Encode(v); err != nil {
			fail(err.Error())
		}
	}
}

// The health statuses Argo CD accepts from a script; anything else it shows as Unknown.
var argocdStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Suspended": true, "Degraded": true, "Missing": true, "Unknown": true,
}

// argocdHealth judges an object as Argo CD does: one being deleted is "Progressing, Pending deletion"
// before any script runs; otherwise the health script runs with no standard library but package, base and
// table, the object in the global `obj`, a one-second limit, and must return a table with `status` and
// `message`.
func argocdHealth(u *unstructured.Unstructured, script string) (string, string, error) {
	if u.GetDeletionTimestamp() != nil {
		return "Progressing", "Pending deletion", nil
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned a %s, not a table", l.Get(-1).Type())
	}
	health := lua.LVAsString(table.RawGetString("status"))
	message := lua.LVAsString(table.RawGetString("message"))
	if !argocdStatuses[health] {
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return health, message, nil
}

// toLua converts decoded JSON the way Argo CD hands an object to Lua: objects and arrays become tables.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []interface{}:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "gitops-health: "+strings.TrimSpace(message))
	os.Exit(1)
}
