// Package kubeconfig writes a rest.Config as a self-contained kubeconfig
// file (clientcmd.WriteToFile), for programs a test or the demo starts.
package kubeconfig

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Write writes cfg's server, CA, bearer token and client certificate to
// path (mode 0600), as the current context, namespace default.
func Write(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cluster"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["context"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "user", Namespace: "default"}
	kc.CurrentContext = "context"
	return clientcmd.WriteToFile(*kc, path)
}
