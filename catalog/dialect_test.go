package catalog

import "testing"

func TestDollarPlaceholders(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"none", `SELECT 1`, `SELECT 1`},
		{"one", `SELECT * FROM vms WHERE name = ?`, `SELECT * FROM vms WHERE name = $1`},
		{"several", `INSERT INTO t (a, b, c) VALUES (?, ?, ?)`, `INSERT INTO t (a, b, c) VALUES ($1, $2, $3)`},
		{"adjacent", `VALUES (?,?)`, `VALUES ($1,$2)`},
		{"ten and more", `(?,?,?,?,?,?,?,?,?,?,?)`, `($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`},
		{"string literal", `SELECT '?' , ? FROM t WHERE a = 'what?'`, `SELECT '?' , $1 FROM t WHERE a = 'what?'`},
		{"escaped quote", `SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{"quoted identifier", `SELECT "odd?col" FROM t WHERE x = ?`, `SELECT "odd?col" FROM t WHERE x = $1`},
		{"line comment", "SELECT ? -- why?\nFROM t WHERE a = ?", "SELECT $1 -- why?\nFROM t WHERE a = $2"},
		{"block comment", `SELECT /* a ? b */ ?`, `SELECT /* a ? b */ $1`},
		{"unterminated literal", `SELECT ?, 'abc?`, `SELECT $1, 'abc?`},
		{"unterminated comment", `SELECT ? /* ?`, `SELECT $1 /* ?`},
		{"trailing comment", `SELECT ? -- ?`, `SELECT $1 -- ?`},
		{"upsert", `INSERT INTO apps (name, manifest) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest`,
			`INSERT INTO apps (name, manifest) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := postgresDialect.rebind(tt.in); got != tt.want {
				t.Errorf("postgres rebind(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if got := sqliteDialect.rebind(tt.in); got != tt.in {
				t.Errorf("sqlite rebind changed %q to %q", tt.in, got)
			}
		})
	}
}
