package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runIDCmd runs keypool with args and stdin, and returns what it printed
// and its exit status. It fails the test if any of secrets shows.
func runIDCmd(t *testing.T, stdin string, secrets []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(&out, &errOut)
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	if err := root.ExecuteContext(t.Context()); err != nil {
		errOut.WriteString(err.Error())
		code = exitCode(err)
	}
	for _, s := range secrets {
		if strings.Contains(out.String(), s) || strings.Contains(errOut.String(), s) {
			t.Errorf("secret %q printed:\nstdout:\n%s\nstderr:\n%s", s, out.String(), errOut.String())
		}
	}
	return out.String(), errOut.String(), code
}

func TestID(t *testing.T) {
	a, b, c := "sk-proj-IDKEYAAAA1111", "sk-proj-IDKEYBBBB2222", "sk-proj-IDKEYCCCC3333"
	secrets := []string{"IDKEYAAAA", "IDKEYBBBB", "IDKEYCCCC"}
	file := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(file, []byte("# team\n"+a+"\n\n"+b+" # spare\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, stdin string
		args             []string
		want             string
	}{
		{name: "stdin", stdin: "# keys\n" + a + "\n\n  " + c + "\n" + a + "\n", args: []string{"id", "-"},
			want: id(a) + " stdin:2\n" + id(c) + " stdin:4\n"},
		{name: "file", args: []string{"id", file}, want: id(a) + " " + file + ":2\n" + id(b) + " " + file + ":4\n"},
		{name: "file and stdin", stdin: c + "\n", args: []string{"id", file, "-"},
			want: id(a) + " " + file + ":2\n" + id(b) + " " + file + ":4\n" + id(c) + " stdin:1\n"},
		{name: "OPENAI_KEY", env: a + ", ," + b + "," + c, args: []string{"id"},
			want: id(a) + " OPENAI_KEY[1]\n" + id(b) + " OPENAI_KEY[3]\n" + id(c) + " OPENAI_KEY[4]\n"},
		{name: "OPENAI_KEY is not read with arguments", env: c, stdin: a + "\n", args: []string{"id", "-"},
			want: id(a) + " stdin:1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OPENAI_KEY", tt.env)
			out, errOut, code := runIDCmd(t, tt.stdin, secrets, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if out != tt.want {
				t.Errorf("printed\n%s\nwant\n%s", out, tt.want)
			}
		})
	}
}

func TestIDErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, env, stdin string
		args             []string
		want             string   // in the error
		hidden           []string // never printed
	}{
		{name: "a line with two words", stdin: "sk-fine-0000\n\nsk-proj-WORDONE11 sk-proj-WORDTWO22\n", args: []string{"id", "-"},
			want: "stdin: keypool: keys line 3", hidden: []string{"WORDONE11", "WORDTWO22"}},
		{name: "a line with a comma", stdin: "sk-proj-COMMAONE1,sk-proj-COMMATWO2\n", args: []string{"id", "-"},
			want: "keys line 1", hidden: []string{"COMMAONE1", "COMMATWO2"}},
		{name: "a line from a .env file", stdin: "sk-fine-0000\nOPENAI_KEY=sk-proj-DOTENVKEY1\n", args: []string{"id", "-"},
			want: "keys line 2: a NAME=VALUE assignment", hidden: []string{"DOTENVKEY1"}},
		{name: "a quoted key", stdin: "\"sk-proj-QUOTEDKEY1\"\n", args: []string{"id", "-"},
			want: "keys line 1: quotes are not part of a key", hidden: []string{"QUOTEDKEY1"}},
		{name: "a key given as an argument", args: []string{"id", "notsk-ARGSECRET99"},
			want: "argument 1 is not a keys file", hidden: []string{"ARGSECRET99"}},
		{name: "a directory", args: []string{"id", dir}, want: "argument 1 is a directory"},
		{name: "nothing to read", args: []string{"id"}, want: "set OPENAI_KEY"},
		{name: "only comments", stdin: "# none\n\n", args: []string{"id", "-"}, want: "no keys read"},
		{name: "OPENAI_KEY with space inside", env: "sk-a,sk-proj-ENVONE11 sk-proj-ENVTWO22", args: []string{"id"},
			want: "OPENAI_KEY: keypool: key 2 has white space inside", hidden: []string{"ENVONE11", "ENVTWO22"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OPENAI_KEY", tt.env)
			out, errOut, code := runIDCmd(t, tt.stdin, tt.hidden, tt.args...)
			if code == 0 || out != "" {
				t.Fatalf("exit %d, printed %q; want an error and nothing printed", code, out)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("error %q; want %q in it", errOut, tt.want)
			}
		})
	}
}
