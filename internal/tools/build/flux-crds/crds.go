// Package fluxcrds pins the Flux API modules whose CRDs the Flux example in
// deploy/flux is validated against; it is never built into anything.
package fluxcrds

import _ "github.com/fluxcd/helm-controller/api/v2"
