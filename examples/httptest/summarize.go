package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Summarize is "your code": it asks the chat completions API for a one-line
// summary of text. It knows nothing of keypool; it takes an *http.Client and
// always names the real API, so in production the client's transport is
// keypool's and in tests it is the same transport pointed at a fake.
func Summarize(ctx context.Context, client *http.Client, text string) (string, error) {
	body, err := json.Marshal(map[string]any{
		"model": "gpt-4o-mini",
		"messages": []map[string]string{
			{"role": "system", "content": "Summarize the user's text in one line."},
			{"role": "user", "content": text},
		},
	})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"https://api.openai.com/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("summarize: %s: %s", resp.Status, raw)
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("summarize: %w", err)
	}
	if len(out.Choices) == 0 {
		return "", errors.New("summarize: no choices in the answer")
	}
	return out.Choices[0].Message.Content, nil
}
