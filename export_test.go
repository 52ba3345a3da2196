package keypool

// RouteOf exposes routeOf to the external tests.
var RouteOf = routeOf

// WithClock exposes withClock to the external tests.
var WithClock = withClock
