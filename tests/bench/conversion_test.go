package bench

import (
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// localexecNeededConversion is set when this package had to teach
// client-go's scheme to decode exec query parameters.
//
// Why: localexec decodes the API server's exec query with client-go's
// scheme.ParameterCodec, but the url.Values -> PodExecOptions conversion is
// generated in k8s.io/kubernetes (pkg/apis/core/v1), not in k8s.io/api, so
// on its own every API-path exec fails with "converting (url.Values) to
// (v1.PodExecOptions): unknown conversion". localexec runs inside this test
// process, so registering the same conversion (a copy of the generated one)
// in client-go's scheme lets the measurements run. It is done only when the
// probe below fails, so it becomes a no-op once localexec decodes the
// query itself; results say when it was needed.
var localexecNeededConversion bool

func init() {
	var o corev1.PodExecOptions
	err := scheme.ParameterCodec.DecodeParameters(url.Values{"stdout": {"true"}}, corev1.SchemeGroupVersion, &o)
	if err == nil && o.Stdout {
		return
	}
	localexecNeededConversion = true
	if err := scheme.Scheme.AddConversionFunc((*url.Values)(nil), (*corev1.PodExecOptions)(nil), func(a, b any, s conversion.Scope) error {
		return convertExecOptions(a.(*url.Values), b.(*corev1.PodExecOptions), s)
	}); err != nil {
		panic(fmt.Sprintf("registering the exec options conversion: %v", err))
	}
}

// convertExecOptions is k8s.io/kubernetes' generated
// Convert_url_Values_To_v1_PodExecOptions.
func convertExecOptions(in *url.Values, out *corev1.PodExecOptions, s conversion.Scope) error {
	bools := []struct {
		key string
		dst *bool
	}{{"stdin", &out.Stdin}, {"stdout", &out.Stdout}, {"stderr", &out.Stderr}, {"tty", &out.TTY}}
	for _, f := range bools {
		*f.dst = false
		if v := (*in)[f.key]; len(v) > 0 {
			if err := runtime.Convert_Slice_string_To_bool(&v, f.dst, s); err != nil {
				return err
			}
		}
	}
	out.Container = ""
	if v := (*in)["container"]; len(v) > 0 {
		if err := runtime.Convert_Slice_string_To_string(&v, &out.Container, s); err != nil {
			return err
		}
	}
	out.Command = nil
	if v := (*in)["command"]; len(v) > 0 {
		out.Command = append([]string(nil), v...)
	}
	return nil
}
