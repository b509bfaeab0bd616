package config

// Platform configures the workflow layer.
type Platform struct{}
