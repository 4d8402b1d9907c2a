package tools

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrebuildCoversEveryTool: every exported func(ctx) (string, error) of
// this package, the shape of a tool, is in prebuildLanes, so that a tool
// added later is built by make tools instead of inside a test's timeout.
func TestPrebuildCoversEveryTool(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]bool{}
	listed := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() && isToolFunc(d.Type) {
					tools[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					if vs, ok := spec.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "prebuildLanes" {
						ast.Inspect(vs, func(n ast.Node) bool {
							if id, ok := n.(*ast.Ident); ok {
								listed[id.Name] = true
							}
							return true
						})
					}
				}
			}
		}
	}
	if len(tools) < 10 {
		t.Fatalf("found only %d tool functions: %v", len(tools), tools)
	}
	for name := range tools {
		if !listed[name] {
			t.Errorf("tool %s is not in prebuildLanes", name)
		}
	}
}

// isToolFunc: the parameters start with a context.Context and the results
// are (string, error).
func isToolFunc(ft *ast.FuncType) bool {
	if ft.Params == nil || len(ft.Params.List) == 0 || ft.Results == nil || len(ft.Results.List) != 2 {
		return false
	}
	sel, ok := ft.Params.List[0].Type.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Context" {
		return false
	}
	r0, ok0 := ft.Results.List[0].Type.(*ast.Ident)
	r1, ok1 := ft.Results.List[1].Type.(*ast.Ident)
	return ok0 && ok1 && r0.Name == "string" && r1.Name == "error"
}
