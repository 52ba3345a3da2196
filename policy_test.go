package keypool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Error bodies as the OpenAI API (and the gateways and Azure in front of it)
// send them; see OPENAI-WIRE.md.
const (
	owInvalidAPIKey           = `{"error":{"message":"Incorrect API key provided: sk-proj-********************************************************************************************************************************************************pXcA. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
	owMissingAuth             = `{"error":{"message":"Missing bearer or basic authentication in header","type":"invalid_request_error","param":null,"code":null}}`
	owMismatchedOrganization  = `{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","param":null,"code":"mismatched_organization"}}`
	owNoOrganization          = `{"error":{"message":"You must be a member of an organization to use the API. Please contact us through our help center at help.openai.com.","type":"invalid_request_error","param":null,"code":"no_organization"}}`
	owMissingScope            = `{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: model.request. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key, that it has the necessary scopes.","type":"invalid_request_error","param":null,"code":null}}`
	owUnsupportedCountry      = `{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}`
	owProjectLacksModel       = `{"error":{"message":"Project ` + "`proj_Xk2mQ9`" + ` does not have access to model ` + "`gpt-4o`" + `","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
	owUnknownModel            = `{"error":{"message":"The model ` + "`gpt-5-pro`" + ` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
	owTokensPerMin            = `{"error":{"message":"Rate limit reached for gpt-4o in organization org-Qf3kd8Zm2pLx on tokens per min (TPM): Limit 30000, Used 29937, Requested 385. Please try again in 644ms. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	owProjectTokensPerMin     = `{"error":{"message":"Rate limit reached for gpt-4o in project proj_Xk2mQ9 on tokens per min (TPM): Limit 60000, Used 59800, Requested 900. Please try again in 700ms. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	owRequestTooLarge         = `{"error":{"message":"Request too large for gpt-4o in organization org-Qf3kd8Zm2pLx on tokens per min (TPM): Limit 30000, Requested 45012. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	owRequestsPerMin          = `{"error":{"message":"Rate limit reached for gpt-4o in organization org-Qf3kd8Zm2pLx on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	owTrialRequestsPerDay     = `{"error":{"message":"Rate limit reached for gpt-3.5-turbo in organization org-Qf3kd8Zm2pLx on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s. Visit https://platform.openai.com/account/rate-limits to learn more. You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	owTokensUsageBased        = `{"error":{"message":"Rate limit reached for default-gpt-3.5-turbo in organization org-Qf3kd8Zm2pLx on tokens_usage_based per min: Limit 90000, Used 89530, Requested 1021. Please try again in 367ms. Contact us through our help center at help.openai.com if you continue to have issues.","type":"tokens_usage_based","param":null,"code":"rate_limit_exceeded"}}`
	owInsufficientQuota       = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
	owInsufficientQuotaOld    = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":null}}`
	owBillingNotActive        = `{"error":{"message":"Your account is not active, please check your billing details on our website.","type":"billing_not_active","param":null,"code":null}}`
	owAccessTerminated        = `{"error":{"message":"Your access was terminated due to violation of our policies, please check your email for more information. If you believe this is in error and would like to appeal, please contact us through our help center at help.openai.com.","type":"access_terminated","param":null,"code":null}}`
	owAccessTerminatedCode    = `{"error":{"message":"Your access was terminated due to violation of our policies, please check your email for more information.","type":"access_terminated","param":null,"code":"access_terminated"}}`
	owContextLengthExceeded   = `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`
	owPayloadTooLarge         = `{"error":{"message":"Request body too large for gpt-4o model. Max size: 8000000 bytes.","type":"invalid_request_error","param":null,"code":null}}`
	owUnprocessable           = `{"error":{"message":"Invalid type for 'messages[0].content': expected one of a string or array of objects, but got an integer instead.","type":"invalid_request_error","param":"messages[0].content","code":"invalid_type"}}`
	owServerError             = `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`
	owOverloaded              = `{"error":{"message":"That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID req_8f2c1a9d0e7b4c3a in your message.)","type":"server_error","param":null,"code":null}}`
	owBadGateway              = `{"error":{"code":502,"message":"Bad gateway.","param":null,"type":"cf_bad_gateway"}}`
	owCloudflareHTML          = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
	owStreamServerError       = `{"error":{"message":"The server experienced an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`
	owResponsesErrorEvent     = `{"type":"error","code":"server_error","message":"The server had an error while processing your request.","param":null,"sequence_number":3}`
	owAzureTooManyRequests    = `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}`
	owSuccess                 = `{"id":"chatcmpl-AbC123","object":"chat.completion","created":1741960000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`
	owUnsupportedCountryNoTyp = `{"error":{"message":"Country, region, or territory not supported","code":"unsupported_country_region_territory"}}`
)

// policyNow is when the answers in the policy tests arrive.
var policyNow = time.Date(2026, time.March, 14, 15, 9, 26, 0, time.UTC)

// policyAnswer builds an Answer the way the transport does from a response.
func policyAnswer(status int, h http.Header, body string, clone bool) *Answer {
	a := &Answer{Status: status, Header: h, Clone: clone, Limits: ParseRateLimits(h, policyNow)}
	if status/100 != 2 {
		a.Error = ParseAPIError(status, []byte(body))
	}
	return a
}

func TestPolicyOutcomeTable(t *testing.T) {
	paid := func(kv ...string) http.Header {
		return rlHeader(append([]string{
			"x-ratelimit-limit-requests", "5000",
			"x-ratelimit-remaining-requests", "4999",
			"x-ratelimit-reset-requests", "12ms",
			"x-ratelimit-limit-tokens", "30000",
			"x-ratelimit-remaining-tokens", "29000",
			"x-ratelimit-reset-tokens", "2s",
		}, kv...)...)
	}
	type row struct {
		name  string
		a     *Answer
		want  Outcome
		retry bool   // DESIGN.md "this request": next key => true; return as is / done / stop => false
		code  string // the code ParseAPIError must read from the body
		noErr bool   // the body holds no error object (HTML)
	}
	ans := policyAnswer
	tests := []row{
		{name: "200", a: ans(200, paid(), owSuccess, false), want: OutcomeSuccess, retry: false},
		{name: "204 no body", a: ans(204, http.Header{}, "", false), want: OutcomeSuccess, retry: false},
		{name: "200 stream opening with server_error",
			a:    &Answer{Status: 200, Header: paid(), Error: ParseAPIError(200, []byte(owStreamServerError)), Limits: ParseRateLimits(paid(), policyNow)},
			want: OutcomeServerError, retry: true},
		{name: "200 Responses stream opening with an error event",
			a:    &Answer{Status: 200, Header: paid(), Error: ParseAPIError(200, []byte(owResponsesErrorEvent)), Limits: ParseRateLimits(paid(), policyNow)},
			want: OutcomeServerError, retry: true},

		{name: "401 invalid_api_key", a: ans(401, http.Header{}, owInvalidAPIKey, false), want: OutcomeRevoked, retry: true, code: "invalid_api_key"},
		{name: "401 account_deactivated", a: ans(401, http.Header{}, `{"error":{"message":"Your account is not active, please check your billing details on our website.","type":"invalid_request_error","param":null,"code":"account_deactivated"}}`, false),
			want: OutcomeRevoked, retry: true, code: "account_deactivated"},
		{name: "400 unverified organization streaming", a: ans(400, paid(), `{"error":{"message":"Your organization must be verified to stream this model. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization.","type":"invalid_request_error","param":"stream","code":"unsupported_value"}}`, false),
			want: OutcomeNotPermitted, retry: true, code: "unsupported_value"},
		{name: "403 unverified organization gpt-image-1", a: ans(403, http.Header{}, `{"error":{"message":"Your organization must be verified to use the model `+"`gpt-image-1`"+`.","type":"invalid_request_error","param":null,"code":null}}`, false),
			want: OutcomeNotPermitted, retry: true},
		{name: "403 organization_must_be_verified", a: ans(403, http.Header{}, `{"error":{"message":"Your organization must be verified to use the model.","code":"organization_must_be_verified"}}`, false),
			want: OutcomeNotPermitted, retry: true, code: "organization_must_be_verified"},
		{name: "400 another unsupported value is the request's fault", a: ans(400, paid(), `{"error":{"message":"Unsupported value: 'temperature' does not support 0.2 with this model.","type":"invalid_request_error","param":"temperature","code":"unsupported_value"}}`, false),
			want: OutcomeClientError, retry: false, code: "unsupported_value"},
		{name: "401 invalid_api_key on a clone", a: ans(401, http.Header{}, owInvalidAPIKey, true), want: OutcomeRevoked, retry: true, code: "invalid_api_key"},
		{name: "401 missing auth, code null", a: ans(401, http.Header{}, owMissingAuth, false), want: OutcomeKeyRejected, retry: true, code: ""},
		{name: "401 mismatched_organization, clone", a: ans(401, http.Header{}, owMismatchedOrganization, true), want: OutcomeRevoked, retry: true, code: "mismatched_organization"},
		{name: "401 mismatched_organization, not a clone", a: ans(401, http.Header{}, owMismatchedOrganization, false), want: OutcomeKeyRejected, retry: true, code: "mismatched_organization"},
		{name: "401 no_organization", a: ans(401, http.Header{}, owNoOrganization, false), want: OutcomeKeyRejected, retry: true, code: "no_organization"},
		{name: "401 restricted key missing scope", a: ans(401, http.Header{}, owMissingScope, false), want: OutcomeKeyRejected, retry: true, code: ""},

		{name: "403 unsupported_country_region_territory", a: ans(403, http.Header{}, owUnsupportedCountry, false), want: OutcomeClientError, retry: false, code: "unsupported_country_region_territory"},
		{name: "403 unsupported country, no type", a: ans(403, http.Header{}, owUnsupportedCountryNoTyp, false), want: OutcomeClientError, retry: false, code: "unsupported_country_region_territory"},
		{name: "403 model_not_found (project lacks the model)", a: ans(403, http.Header{}, owProjectLacksModel, false), want: OutcomeModelNotFound, retry: true, code: "model_not_found"},
		{name: "404 model_not_found", a: ans(404, http.Header{}, owUnknownModel, false), want: OutcomeModelNotFound, retry: true, code: "model_not_found"},

		{name: "429 tokens per min, bucket spent",
			a:    ans(429, paid("x-ratelimit-remaining-tokens", "63", "x-ratelimit-reset-tokens", "644ms"), owTokensPerMin, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 tokens per min, bucket at zero, Retry-After",
			a:    ans(429, paid("x-ratelimit-remaining-tokens", "0", "retry-after", "1"), owTokensPerMin, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 tokens per min, no rate-limit headers",
			a:    ans(429, http.Header{}, owTokensPerMin, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 Request too large (token bucket full)",
			a:    ans(429, paid("x-ratelimit-remaining-tokens", "30000", "x-ratelimit-reset-tokens", "0s"), owRequestTooLarge, false),
			want: OutcomeTooLarge, retry: false, code: "rate_limit_exceeded"},
		// A project's token bucket is spent while the organization's is full
		// (it refills faster than one project can draw on it): this is a
		// temporary limit another key can take, not a request too large.
		{name: "429 project tokens per min, project bucket spent, organization bucket full",
			a: ans(429, paid(
				"x-ratelimit-remaining-tokens", "30000",
				"x-ratelimit-limit-project-tokens", "60000",
				"x-ratelimit-remaining-project-tokens", "0",
				"x-ratelimit-reset-project-tokens", "700ms"), owProjectTokensPerMin, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 requests per min",
			a:    ans(429, paid("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "20s", "x-ratelimit-remaining-tokens", "30000"), owRequestsPerMin, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 trial requests per day (message mentions billing)",
			a: ans(429, rlHeader(
				"x-ratelimit-limit-requests", "200",
				"x-ratelimit-remaining-requests", "0",
				"x-ratelimit-reset-requests", "7m12s",
				"x-ratelimit-limit-tokens", "40000",
				"x-ratelimit-remaining-tokens", "40000",
				"x-ratelimit-reset-tokens", "0s"), owTrialRequestsPerDay, false),
			want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 tokens_usage_based", a: ans(429, http.Header{}, owTokensUsageBased, false), want: OutcomeRateLimited, retry: true, code: "rate_limit_exceeded"},
		{name: "429 insufficient_quota", a: ans(429, http.Header{}, owInsufficientQuota, false), want: OutcomeOverQuota, retry: true, code: "insufficient_quota"},
		{name: "429 insufficient_quota, code null", a: ans(429, http.Header{}, owInsufficientQuotaOld, false), want: OutcomeOverQuota, retry: true, code: ""},
		{name: "429 billing_not_active", a: ans(429, http.Header{}, owBillingNotActive, false), want: OutcomeOverQuota, retry: true, code: ""},
		{name: "429 access_terminated, code null", a: ans(429, http.Header{}, owAccessTerminated, false), want: OutcomeRevoked, retry: true, code: ""},
		{name: "429 access_terminated, code access_terminated", a: ans(429, http.Header{}, owAccessTerminatedCode, false), want: OutcomeRevoked, retry: true, code: "access_terminated"},
		{name: "429 Azure, code \"429\", Retry-After",
			a:    ans(429, rlHeader("retry-after", "6", "x-ratelimit-remaining-requests", "0", "x-ratelimit-remaining-tokens", "0"), owAzureTooManyRequests, false),
			want: OutcomeRateLimited, retry: true, code: "429"},

		{name: "400 context_length_exceeded", a: ans(400, http.Header{}, owContextLengthExceeded, false), want: OutcomeClientError, retry: false, code: "context_length_exceeded"},
		{name: "413", a: ans(413, http.Header{}, owPayloadTooLarge, false), want: OutcomeClientError, retry: false, code: ""},
		{name: "422", a: ans(422, http.Header{}, owUnprocessable, false), want: OutcomeClientError, retry: false, code: "invalid_type"},

		{name: "500 server_error", a: ans(500, http.Header{}, owServerError, false), want: OutcomeServerError, retry: true, code: ""},
		{name: "503 overloaded", a: ans(503, http.Header{}, owOverloaded, false), want: OutcomeServerError, retry: true, code: ""},
		{name: "502 cf_bad_gateway, integer code", a: ans(502, http.Header{}, owBadGateway, false), want: OutcomeServerError, retry: true, code: "502"},
		{name: "502 Cloudflare HTML", a: ans(502, rlHeader("content-type", "text/html", "server", "cloudflare"), owCloudflareHTML, false), want: OutcomeServerError, retry: true, noErr: true},
		{name: "network error",
			a:    &Answer{Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Limits: ParseRateLimits(nil, policyNow)},
			want: OutcomeServerError, retry: true},
		{name: "time to headers exceeded",
			a:    &Answer{Err: fmt.Errorf("keypool: attempt timed out (%s): %w", 30*time.Second, context.DeadlineExceeded), Limits: ParseRateLimits(nil, policyNow)},
			want: OutcomeServerError, retry: true},
		{name: "caller cancelled",
			a:    &Answer{Cancelled: true, Err: context.Canceled, Limits: ParseRateLimits(nil, policyNow)},
			want: OutcomeCancelled, retry: false},
		{name: "caller cancelled after a 429 arrived",
			a:    func() *Answer { a := ans(429, http.Header{}, owTokensPerMin, false); a.Cancelled = true; return a }(),
			want: OutcomeCancelled, retry: false, code: "rate_limit_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DefaultPolicy().Classify(tt.a)
			if got != tt.want {
				t.Errorf("Classify = %v; want %v", got, tt.want)
			}
			if r := got.Retryable(); r != tt.retry {
				t.Errorf("%v.Retryable() = %v; want %v", got, r, tt.retry)
			}
			if r := tt.want.Retryable(); r != tt.retry {
				t.Errorf("want %v.Retryable() = %v; the table says %v", tt.want, r, tt.retry)
			}
			// The body must have been decoded where it is JSON, so that the
			// row tests the classification and not a failed parse.
			if tt.a.Status/100 != 2 && tt.a.Status != 0 {
				switch {
				case tt.noErr && tt.a.Error != nil:
					t.Errorf("ParseAPIError = %+v; want nil", *tt.a.Error)
				case tt.noErr:
				case tt.a.Error == nil:
					t.Errorf("ParseAPIError(%d) = nil; want the error decoded", tt.a.Status)
				case tt.a.Error.Code != tt.code:
					t.Errorf("ParseAPIError(%d).Code = %q; want %q", tt.a.Status, tt.a.Error.Code, tt.code)
				}
			}
		})
	}

	t.Run("trial 429 is a trial key", func(t *testing.T) {
		a := ans(429, rlHeader("x-ratelimit-limit-requests", "200", "x-ratelimit-remaining-requests", "0"), owTrialRequestsPerDay, false)
		if !a.Limits.Trial() {
			t.Errorf("Limits.Trial() = false for limit-requests 200")
		}
	})
	t.Run("Azure 429 keeps its Retry-After", func(t *testing.T) {
		a := ans(429, rlHeader("retry-after", "6"), owAzureTooManyRequests, false)
		if a.Limits.RetryAfter != 6*time.Second {
			t.Errorf("Limits.RetryAfter = %v; want 6s", a.Limits.RetryAfter)
		}
	})
}

func TestParseAPIError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   *APIError // nil: no error object
	}{
		{"code as string", 401, owInvalidAPIKey, &APIError{Status: 401,
			Message: "Incorrect API key provided: sk-proj-********************************************************************************************************************************************************pXcA. You can find your API key at https://platform.openai.com/account/api-keys.",
			Type:    "invalid_request_error", Code: "invalid_api_key"}},
		{"code null", 429, owBillingNotActive, &APIError{Status: 429,
			Message: "Your account is not active, please check your billing details on our website.", Type: "billing_not_active"}},
		{"code integer", 502, owBadGateway, &APIError{Status: 502, Message: "Bad gateway.", Type: "cf_bad_gateway", Code: "502"}},
		{"code negative integer", 500, `{"error":{"code":-32000,"message":"m"}}`, &APIError{Status: 500, Message: "m", Code: "-32000"}},
		{"code true", 500, `{"error":{"code":true,"message":"m","type":"t"}}`, &APIError{Status: 500, Message: "m", Type: "t"}},
		{"code object", 500, `{"error":{"code":{"x":1},"message":"m","type":"t"}}`, &APIError{Status: 500, Message: "m", Type: "t"}},
		{"param string", 400, owContextLengthExceeded, &APIError{Status: 400,
			Message: "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.",
			Type:    "invalid_request_error", Param: "messages", Code: "context_length_exceeded"}},
		{"param null", 404, owUnknownModel, &APIError{Status: 404,
			Message: "The model `gpt-5-pro` does not exist or you do not have access to it.", Type: "invalid_request_error", Code: "model_not_found"}},
		{"param integer", 400, `{"error":{"message":"m","type":"invalid_request_error","param":3,"code":"x"}}`,
			&APIError{Status: 400, Message: "m", Type: "invalid_request_error", Param: "3", Code: "x"}},
		{"Azure, no type", 429, owAzureTooManyRequests, &APIError{Status: 429,
			Message: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
			Code:    "429"}},
		{"Responses API error event", 200, `{"type":"error","code":"server_error","message":"The server had an error while processing your request.","param":null}`,
			&APIError{Status: 200, Message: "The server had an error while processing your request.", Type: "server_error", Code: "server_error"}},
		{"Responses API error event with sequence number", 200, owResponsesErrorEvent,
			&APIError{Status: 200, Message: "The server had an error while processing your request.", Type: "server_error", Code: "server_error"}},
		{"chat stream error event", 200, owStreamServerError, &APIError{Status: 200,
			Message: "The server experienced an error while processing your request. Sorry about that!", Type: "server_error"}},
		{"white space around", 500, "\r\n  " + owServerError + "\n", &APIError{Status: 500,
			Message: "The server had an error while processing your request. Sorry about that!", Type: "server_error"}},
		{"escaped text", 400, `{"error":{"message":"a \"quoted\" \u00e9","type":"invalid_request_error","code":"x\u0079"}}`,
			&APIError{Status: 400, Message: `a "quoted" é`, Type: "invalid_request_error", Code: "xy"}},
		{"HTML", 502, owCloudflareHTML, nil},
		{"empty", 500, "", nil},
		{"white space only", 500, " \n\t", nil},
		{"truncated JSON", 429, owInsufficientQuota[:len(owInsufficientQuota)/2], nil},
		{"plain text", 500, "upstream connect error or disconnect/reset before headers", nil},
		{"no error object", 200, owSuccess, nil},
		{"error null", 500, `{"error":null}`, nil},
		{"error a string", 500, `{"error":"Internal Server Error"}`, nil},
		{"JSON array", 500, `[{"error":{"code":"x"}}]`, nil},
		{"JSON null", 500, `null`, nil},
		{"Responses event not an error", 200, `{"type":"response.created","sequence_number":0}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseAPIError(tt.status, []byte(tt.body))
			switch {
			case tt.want == nil && got != nil:
				t.Fatalf("ParseAPIError = %+v; want nil", *got)
			case tt.want == nil:
				return
			case got == nil:
				t.Fatalf("ParseAPIError = nil; want %+v", *tt.want)
			case *got != *tt.want:
				t.Errorf("ParseAPIError =\n%+v\nwant\n%+v", *got, *tt.want)
			}
		})
	}
}

func TestAPIErrorString(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
		hidden []string
	}{
		{"invalid_api_key", 401, owInvalidAPIKey, "keypool: upstream 401 invalid_request_error/invalid_api_key",
			[]string{"Incorrect API key", "sk-proj-", "pXcA", "platform.openai.com"}},
		{"code null", 500, owServerError, "keypool: upstream 500 server_error/-", []string{"Sorry"}},
		{"no type", 429, owAzureTooManyRequests, "keypool: upstream 429 -/429", []string{"ChatCompletions_Create"}},
		{"integer code", 502, owBadGateway, "keypool: upstream 502 cf_bad_gateway/502", []string{"Bad gateway"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ParseAPIError(tt.status, []byte(tt.body))
			if e == nil {
				t.Fatal("ParseAPIError = nil")
			}
			for _, s := range []string{e.Error(), fmt.Sprint(e), fmt.Errorf("call: %w", e).Error()} {
				if !strings.Contains(s, tt.want) {
					t.Errorf("error %q; want it to contain %q", s, tt.want)
				}
				for _, h := range tt.hidden {
					if strings.Contains(s, h) {
						t.Errorf("error %q contains message text %q", s, h)
					}
				}
			}
			var target *APIError
			if err := fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", e)); !errors.As(err, &target) || target.Status != tt.status || target.Message != e.Message {
				t.Errorf("errors.As through wrapping: %v, %+v", errors.As(err, &target), target)
			}
		})
	}
}

func TestPolicyWrap(t *testing.T) {
	teapot := PolicyFunc(func(a *Answer) Outcome {
		if a.Status == http.StatusTeapot {
			return OutcomeServerError
		}
		return DefaultPolicy().Classify(a)
	})
	var _ Policy = teapot
	tests := []struct {
		name        string
		a           *Answer
		want        Outcome
		wantDefault Outcome
	}{
		{"418 changed", policyAnswer(418, http.Header{}, `{"error":{"message":"I'm a teapot","type":"invalid_request_error","code":null}}`, false), OutcomeServerError, OutcomeClientError},
		{"418 without a body changed", policyAnswer(418, http.Header{}, "", false), OutcomeServerError, OutcomeClientError},
		{"401 deferred", policyAnswer(401, http.Header{}, owInvalidAPIKey, false), OutcomeRevoked, OutcomeRevoked},
		{"429 deferred", policyAnswer(429, http.Header{}, owInsufficientQuota, false), OutcomeOverQuota, OutcomeOverQuota},
		{"400 deferred", policyAnswer(400, http.Header{}, owContextLengthExceeded, false), OutcomeClientError, OutcomeClientError},
		{"200 deferred", policyAnswer(200, http.Header{}, owSuccess, false), OutcomeSuccess, OutcomeSuccess},
		{"cancelled deferred", &Answer{Cancelled: true}, OutcomeCancelled, OutcomeCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := teapot.Classify(tt.a); got != tt.want {
				t.Errorf("wrapped Classify = %v; want %v", got, tt.want)
			}
			if got := DefaultPolicy().Classify(tt.a); got != tt.wantDefault {
				t.Errorf("DefaultPolicy().Classify = %v; want %v", got, tt.wantDefault)
			}
		})
	}
}

func TestPolicyOutcomeString(t *testing.T) {
	tests := []struct {
		o         Outcome
		want      string
		retryable bool
	}{
		{OutcomeSuccess, "success", false},
		{OutcomeRevoked, "revoked", true},
		{OutcomeOverQuota, "over_quota", true},
		{OutcomeRateLimited, "rate_limited", true},
		{OutcomeTooLarge, "too_large", false},
		{OutcomeModelNotFound, "model_not_found", true},
		{OutcomeKeyRejected, "key_rejected", true},
		{OutcomeServerError, "server_error", true},
		{OutcomeClientError, "client_error", false},
		{OutcomeCancelled, "cancelled", false},
		{OutcomeNotPermitted, "not_permitted", true},
		{OutcomeNotPermitted + 1, "outcome(11)", false},
		{42, "outcome(42)", false},
		{255, "outcome(255)", false},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.o.String(); got != tt.want {
				t.Errorf("Outcome(%d).String() = %q; want %q", uint8(tt.o), got, tt.want)
			}
			if got := fmt.Sprint(tt.o); got != tt.want {
				t.Errorf("fmt.Sprint(Outcome(%d)) = %q; want %q", uint8(tt.o), got, tt.want)
			}
			if b, err := tt.o.MarshalText(); err != nil || string(b) != tt.want {
				t.Errorf("MarshalText = %q, %v; want %q", b, err, tt.want)
			}
			if got := tt.o.Retryable(); got != tt.retryable {
				t.Errorf("%v.Retryable() = %v; want %v", tt.o, got, tt.retryable)
			}
		})
	}
}

func TestPolicyStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{StateUnchecked, "unchecked"},
		{StateReady, "ready"},
		{StateCooling, "cooling"},
		{StateOverQuota, "over_quota"},
		{StateRevoked, "revoked"},
		{StateDisabled, "disabled"},
		{StateDisabled + 1, "state(6)"},
		{255, "state(255)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.s.String(); got != tt.want {
				t.Errorf("State(%d).String() = %q; want %q", uint8(tt.s), got, tt.want)
			}
			if b, err := tt.s.MarshalText(); err != nil || string(b) != tt.want {
				t.Errorf("MarshalText = %q, %v; want %q", b, err, tt.want)
			}
		})
	}
}

func FuzzParseAPIError(f *testing.F) {
	for _, b := range []string{
		owInvalidAPIKey, owMissingAuth, owBadGateway, owCloudflareHTML, owResponsesErrorEvent, owAzureTooManyRequests,
		owStreamServerError, "", "{", `{"error":`, `{"error":{"code":1e999}}`, `{"error":{"code":"\ud800"}}`,
		`{"type":"error","code":-0.5e3}`, `{"error":{"param":[1,2],"code":{}}}`, "\x00{}",
	} {
		f.Add(429, []byte(b))
	}
	f.Add(0, []byte(owServerError))
	f.Add(-1, []byte(owServerError))
	f.Add(200, []byte(owStreamServerError))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := ParseAPIError(status, body)
		if e != nil {
			if e.Status != status {
				t.Errorf("Status = %d; want %d", e.Status, status)
			}
			if !strings.HasPrefix(e.Error(), "keypool: upstream ") {
				t.Errorf("Error() = %q", e.Error())
			}
			if trimmed := strings.TrimSpace(string(body)); !strings.HasPrefix(trimmed, "{") {
				t.Errorf("an error from a body not starting with {: %q", body)
			}
		}
		for _, clone := range []bool{false, true} {
			o := DefaultPolicy().Classify(&Answer{Status: status, Error: e, Clone: clone, Limits: ParseRateLimits(nil, policyNow)})
			if o > OutcomeCancelled {
				t.Errorf("Classify = %v; not an outcome", o)
			}
			if status >= 200 && status < 300 && e == nil && o != OutcomeSuccess {
				t.Errorf("status %d, no error: %v; want success", status, o)
			}
		}
	})
}
