package keypool

// RouteOf exposes routeOf to the external tests.
var RouteOf = routeOf
