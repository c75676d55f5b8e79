// s3flow-gitops reads one Kubernetes object as JSON on stdin and prints, as one JSON line, how a
// GitOps tool sees it:
//
//	s3flow-gitops kstatus          the kstatus library (Flux, kpt, cli-utils apply --wait)
//	s3flow-gitops argo-health FILE an Argo CD health check in Lua, run as Argo CD runs it
//
// Both print {"status": "...", "message": "..."}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: s3flow-gitops kstatus | argo-health FILE.lua  (object as JSON on stdin)")
	}
	obj := readObject()
	var out verdict
	switch {
	case os.Args[1] == "kstatus" && len(os.Args) == 2:
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fail("kstatus: %v", err)
		}
		out = verdict{Status: res.Status.String(), Message: res.Message}
	case os.Args[1] == "argo-health" && len(os.Args) == 3:
		script, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		out = argoHealth(obj, string(script))
	default:
		fail("unknown command %q", os.Args[1:])
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

// readObject decodes stdin as the API machinery does for unstructured objects: whole numbers
// become int64 and the others float64, as in the objects Argo CD and kstatus are handed.
func readObject() map[string]interface{} {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(data, &obj); err != nil {
		fail("stdin is not a JSON object: %v", err)
	}
	return obj
}

// argoHealth runs a custom health check the way Argo CD runs one from argocd-cm: a fresh Lua 5.1
// state with only the package, base and table libraries (no string or math unless the
// customization opts in with useOpenLibs; the safe os subset Argo CD adds is left out, since these
// scripts never use it), one second to finish, the object as the global `obj`, and the script's
// returned table read as {status, message}, an unknown status counting as Unknown.
func argoHealth(obj map[string]interface{}, script string) verdict {
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
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			fail("opening %s: %v", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		fail("health script: %v", err)
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	out := verdict{Status: field(result, "status"), Message: field(result, "message")}
	switch out.Status {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return out
	}
	return verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}
}

// field is a string field of the returned table; anything but a string or nil is an error, as
// Argo CD's decoding of the table into its health status would be.
func field(t *lua.LTable, name string) string {
	switch v := t.RawGetString(name).(type) {
	case lua.LString:
		return string(v)
	case *lua.LNilType:
		return ""
	default:
		fail("health script returned %s %s, not a string", name, v.Type())
		return ""
	}
}

// toLua converts a decoded JSON value: objects to tables keyed by string, arrays to tables indexed
// from 1, numbers to LNumber, null to nil.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "s3flow-gitops: "+format+"\n", args...)
	os.Exit(2)
}
