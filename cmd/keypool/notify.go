package main

import (
	"log/slog"
	"os"

	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/secret"
)

// notifyConfig turns the config's notify section into the notifier's
// config; ok is false when no notifier is configured. As in
// openai-api-route, FEISHU_WEBHOOK in the environment is a Feishu bot when
// the config names none.
func notifyConfig(c config.Notify, logger *slog.Logger) (nc notify.Config, ok bool) {
	nc = notify.Config{
		Dedup: c.Dedup, Burst: c.Burst, Every: c.Every,
		FailureThreshold: c.Failures, FailureWindow: c.FailureWindow,
		Logger: logger,
	}
	if m := c.Matrix; m != nil {
		nc.Matrix = &notify.Matrix{Homeserver: m.Homeserver, Room: m.Room, Token: m.Token}
	}
	if f := c.Feishu; f != nil {
		nc.Feishu = &notify.Feishu{Webhook: f.Webhook, Secret: f.Secret}
	} else if hook := os.Getenv("FEISHU_WEBHOOK"); hook != "" {
		nc.Feishu = &notify.Feishu{Webhook: secret.New(hook)}
		logger.Info("feishu notifications to FEISHU_WEBHOOK (from the environment)")
	}
	if w := c.Webhook; w != nil {
		nc.Webhook = &notify.Webhook{URL: w.URL, Headers: w.Headers}
	}
	return nc, nc.Matrix != nil || nc.Feishu != nil || nc.Webhook != nil
}
