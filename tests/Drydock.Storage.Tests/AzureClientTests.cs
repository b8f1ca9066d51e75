using System.Net;
using Drydock.Storage.Azure;
using Xunit;

namespace Drydock.Storage.Tests;

/// <summary>The REST client's request shaping, signing and retry policy, against a scripted HTTP handler.</summary>
public sealed class AzureClientTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public void Connection_string_with_account_and_suffix_builds_the_public_endpoint()
    {
        var key = Convert.ToBase64String(new byte[32]);
        var account = AzureStorageAccount.Parse($"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.chinacloudapi.cn");
        Assert.Equal(new Uri("https://acct.blob.core.chinacloudapi.cn"), account.BlobEndpoint);
        Assert.True(account.UsesSharedKey);
    }

    [Fact]
    public void Connection_string_with_blob_endpoint_and_sas_uses_the_sas()
    {
        var account = AzureStorageAccount.Parse("BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2021-12-02&sig=abc%3D");
        Assert.Equal("acct", account.AccountName);
        Assert.False(account.UsesSharedKey);
    }

    [Theory]
    [InlineData("AccountKey=AAAA")]
    [InlineData("AccountName=a;AccountKey=not base64!")]
    [InlineData("garbage")]
    [InlineData("AccountName=a;AccountName=b")]
    public void Malformed_connection_strings_are_refused_without_echoing_the_key(string text)
    {
        var e = Assert.Throws<FormatException>(() => AzureStorageAccount.Parse(text));
        Assert.DoesNotContain("not base64!", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Sas_url_splits_into_endpoint_container_and_prefix()
    {
        var (account, container, prefix) = AzureStorageAccount.ParseSasUrl(new Uri("https://acct.blob.core.windows.net/backups/site-a/repo1?sv=2021-12-02&sr=c&sig=xyz"));
        Assert.Equal("backups", container);
        Assert.Equal("site-a/repo1", prefix);
        Assert.Equal(new Uri("https://acct.blob.core.windows.net"), account.BlobEndpoint);

        var (emulator, c2, p2) = AzureStorageAccount.ParseSasUrl(new Uri("http://127.0.0.1:10000/devstoreaccount1/backups?sig=xyz"));
        Assert.Equal(new Uri("http://127.0.0.1:10000/devstoreaccount1"), emulator.BlobEndpoint);
        Assert.Equal("backups", c2);
        Assert.Equal("", p2);
        Assert.Throws<FormatException>(() => AzureStorageAccount.ParseSasUrl(new Uri("https://acct.blob.core.windows.net/backups")));
    }

    [Fact]
    public void String_to_sign_follows_the_documented_layout()
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, "http://127.0.0.1:10000/devstoreaccount1/c/blob?comp=block&blockid=YQ%3D%3D");
        request.Content = new ByteArrayContent(new byte[5]);
        request.Content.Headers.ContentLength = 5;
        request.Headers.TryAddWithoutValidation("If-None-Match", "*");
        request.Headers.Add("x-ms-version", "2021-12-02");
        request.Headers.Add("x-ms-date", "Mon, 01 Jan 2024 00:00:00 GMT");
        var expected = "PUT\n\n\n5\n\n\n\n\n\n*\n\n\n"
                       + "x-ms-date:Mon, 01 Jan 2024 00:00:00 GMT\nx-ms-version:2021-12-02\n"
                       + "/devstoreaccount1/devstoreaccount1/c/blob\nblockid:YQ==\ncomp:block";
        Assert.Equal(expected, SharedKeySigner.StringToSign(request, "devstoreaccount1"));
    }

    [Fact]
    public async Task Throttling_and_server_errors_are_retried_until_success()
    {
        var handler = new ScriptedHandler(
            _ => Status(HttpStatusCode.TooManyRequests),
            _ => Status(HttpStatusCode.ServiceUnavailable, "ServerBusy"),
            _ => Status(HttpStatusCode.InternalServerError, "InternalError"),
            _ => Status(HttpStatusCode.Created));
        using var store = Store(handler, maxRetries: 5);
        await store.PutAsync("obj", "x"u8.ToArray(), BlobCondition.CreateOnly, Ct);
        Assert.Equal(4, handler.Requests.Count);
        Assert.Equal(3, store.RetryCount);
        Assert.All(handler.Requests, r => Assert.Equal("*", r.IfNoneMatch));
    }

    [Fact]
    public async Task Retries_are_bounded_and_the_last_error_carries_the_request_id()
    {
        var handler = new ScriptedHandler(Enumerable.Repeat<Func<HttpRequestMessage, HttpResponseMessage>>(_ => Status(HttpStatusCode.ServiceUnavailable, "ServerBusy"), 10).ToArray());
        using var store = Store(handler, maxRetries: 2);
        var e = await Assert.ThrowsAsync<BlobThrottledException>(() => store.PutAsync("obj", "x"u8.ToArray(), BlobCondition.CreateOnly, Ct));
        Assert.Equal(3, handler.Requests.Count);
        Assert.Equal("req-3", e.RequestId);
    }

    [Fact]
    public async Task Not_found_and_conflicts_are_not_retried()
    {
        var handler = new ScriptedHandler(_ => Status(HttpStatusCode.Conflict, "BlobAlreadyExists"));
        using var store = Store(handler, maxRetries: 5);
        await Assert.ThrowsAsync<BlobAlreadyExistsException>(() => store.PutAsync("obj", "x"u8.ToArray(), BlobCondition.CreateOnly, Ct));
        Assert.Single(handler.Requests);
    }

    [Fact]
    public async Task Sas_requests_carry_the_token_and_no_authorization_header()
    {
        var handler = new ScriptedHandler(_ => Status(HttpStatusCode.Created));
        var (account, container, prefix) = AzureStorageAccount.ParseSasUrl(new Uri("https://acct.blob.core.windows.net/backups/p?sv=2021-12-02&sig=s1g"));
        using var store = new AzureBlobStore(account, new AzureBlobStoreOptions { Container = container, Prefix = prefix }, new HttpClient(handler));
        await store.PutAsync("obj", "x"u8.ToArray(), BlobCondition.Overwrite, Ct);
        var request = Assert.Single(handler.Requests);
        Assert.Equal("https://acct.blob.core.windows.net/backups/p/obj?sv=2021-12-02&sig=s1g", request.Uri);
        Assert.Null(request.Authorization);
        Assert.Equal("2021-12-02", request.Version);
    }

    [Fact]
    public async Task Large_puts_stage_blocks_then_commit_the_list_create_only()
    {
        var handler = new ScriptedHandler(Enumerable.Repeat<Func<HttpRequestMessage, HttpResponseMessage>>(_ => Status(HttpStatusCode.Created), 10).ToArray());
        using var store = Store(handler, maxRetries: 0, singleUploadLimit: 100, blockSize: 40);
        await store.PutAsync("obj", new byte[101], BlobCondition.CreateOnly, Ct);
        Assert.Equal(4, handler.Requests.Count);
        Assert.All(handler.Requests.Take(3), r => Assert.Contains("comp=block&blockid=", r.Uri, StringComparison.Ordinal));
        Assert.All(handler.Requests.Take(3), r => Assert.Null(r.IfNoneMatch));
        Assert.Contains("comp=blocklist", handler.Requests[3].Uri, StringComparison.Ordinal);
        Assert.Equal("*", handler.Requests[3].IfNoneMatch);
        Assert.Equal(3, handler.Requests[3].Body!.Split("<Latest>").Length - 1);
    }

    private static AzureBlobStore Store(ScriptedHandler handler, int maxRetries, int singleUploadLimit = 1 << 20, int blockSize = 1 << 20)
        => new(
            AzureStorageAccount.Parse("UseDevelopmentStorage=true"),
            new AzureBlobStoreOptions
            {
                Container = "test",
                MaxRetries = maxRetries,
                RetryBaseDelay = TimeSpan.Zero,
                RetryMaxDelay = TimeSpan.Zero,
                SingleUploadLimit = singleUploadLimit,
                BlockSize = blockSize,
            },
            new HttpClient(handler));

    private static HttpResponseMessage Status(HttpStatusCode status, string? code = null)
    {
        var response = new HttpResponseMessage(status) { Content = new ByteArrayContent([]) };
        if (code is not null)
        {
            response.Headers.Add("x-ms-error-code", code);
        }

        return response;
    }

    private sealed record Seen(string Uri, string? IfNoneMatch, string? Authorization, string? Version, string? Body);

    private sealed class ScriptedHandler(params Func<HttpRequestMessage, HttpResponseMessage>[] script) : HttpMessageHandler
    {
        public List<Seen> Requests { get; } = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var body = request.Content is null ? null : await request.Content.ReadAsStringAsync(cancellationToken);
            Requests.Add(new Seen(
                request.RequestUri!.AbsoluteUri,
                request.Headers.TryGetValues("If-None-Match", out var inm) ? inm.Single() : null,
                request.Headers.Authorization?.ToString(),
                request.Headers.TryGetValues("x-ms-version", out var v) ? v.Single() : null,
                body));
            var response = script[Math.Min(Requests.Count - 1, script.Length - 1)](request);
            response.Headers.Add("x-ms-request-id", $"req-{Requests.Count}");
            return response;
        }
    }
}
