package records

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, pure Go
)

// sqliteParams tune every connection: WAL lets readers run beside the
// writer, NORMAL sync is safe with WAL and much faster, busy_timeout (set
// first) waits for another writer instead of failing, and BEGIN IMMEDIATE
// takes the write lock up front so two writers cannot deadlock upgrading.
const sqliteParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"

// sqliteMicros is the length of a minute, an hour and a day in the time
// column.
var sqliteMicros = map[string]int64{
	"minute": int64(time.Minute / time.Microsecond),
	"hour":   int64(time.Hour / time.Microsecond),
	"day":    int64(24 * time.Hour / time.Microsecond),
}

var sqliteDialect = &dialect{
	name:     TypeSQLite,
	idType:   "INTEGER PRIMARY KEY", // the rowid: AUTOINCREMENT would update sqlite_sequence on every insert
	timeType: "INTEGER",             // unix microseconds, UTC
	// No round trips to save: one prepared row beats parsing and binding
	// a statement of hundreds.
	rowsPerInsert: 16,
	timeArg:       func(t time.Time) any { return t.UnixMicro() },
	window: func(unit string) string {
		// The floor, also before 1970, where % is negative.
		n := sqliteMicros[unit]
		return fmt.Sprintf("(time - ((time %% %d) + %d) %% %d)", n, n, n)
	},
	text: func(s string) string { return s },
	busy: func(err error) bool {
		var e interface{ Code() int }
		return errors.As(err, &e) && e.Code()&0xff == sqliteBusy
	},
}

// sqliteBusy is SQLITE_BUSY, the primary result code of a database whose
// lock another connection holds.
const sqliteBusy = 5

func openSQLite(path string) (*store, error) {
	if path == "" {
		path = DefaultSQLiteFile
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&" // the path has parameters of its own
	}
	db, err := sql.Open("sqlite", path+sep+sqliteParams)
	if err != nil {
		return nil, fmt.Errorf("records: sqlite: open %s: %w", RedactAddr(path), err)
	}
	if isMemory(path) {
		// Each connection would have a database of its own: keep one,
		// open forever.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	}
	return newStore(db, sqliteDialect, RedactAddr(path)), nil
}

// isMemory reports whether path names an in-memory database.
func isMemory(path string) bool {
	return path == ":memory:" || strings.HasPrefix(path, "file::memory:") || strings.Contains(path, "mode=memory")
}
