using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Xml;
using System.Xml.Linq;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using Polly.Retry;

namespace Drydock.Storage.Azure;

/// <summary>
/// <see cref="IBlobStore"/> over the Azure Blob Storage REST API (x-ms-version 2021-12-02), block blobs only.
/// </summary>
/// <remarks>
/// Operations: Put Blob (small objects), Put Block + Put Block List (large objects: nothing is visible until the
/// list commits), Get Blob with <c>x-ms-range</c>, Get Blob Properties, Delete Blob, List Blobs with prefix and
/// marker, Create Container. Create-only writes send <c>If-None-Match: *</c>; compare-and-swap sends
/// <c>If-Match</c>. Throttling (429, 503), other 5xx, connection failures and per-attempt timeouts are retried with
/// exponential backoff and jitter (Polly), honouring Retry-After. Errors carry the service's request id.
/// A retried create-only put whose first attempt succeeded unseen reports <see cref="BlobAlreadyExistsException"/>:
/// callers of content-addressed names treat that as success after checking the object.
/// </remarks>
public sealed partial class AzureBlobStore : IBlobStore, IDisposable
{
    /// <summary>The REST API version this client speaks.</summary>
    public const string ApiVersion = "2021-12-02";

    private readonly AzureStorageAccount _account;
    private readonly AzureBlobStoreOptions _options;
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline _retry;
    private readonly string _containerUrl;
    private readonly string _namePrefix;
    private long _requests;
    private long _retries;

    /// <summary>Creates a store over one container.</summary>
    /// <param name="account">The account and credentials.</param>
    /// <param name="options">Container, prefix, upload and retry settings.</param>
    /// <param name="httpClient">The HTTP client to use; one is created (and disposed with the store) if null.</param>
    /// <param name="timeProvider">The clock for x-ms-date, timeouts and backoff; the system clock if null.</param>
    /// <param name="logger">The logger.</param>
    public AzureBlobStore(AzureStorageAccount account, AzureBlobStoreOptions options, HttpClient? httpClient = null, TimeProvider? timeProvider = null, ILogger<AzureBlobStore>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(account);
        ArgumentNullException.ThrowIfNull(options);
        if (!IsValidContainer(options.Container))
        {
            throw new ArgumentException($"'{options.Container}' is not a valid container name (3-63 of a-z, 0-9, '-').", nameof(options));
        }

        if (options.Prefix.Length > 0)
        {
            BlobName.Validate(options.Prefix);
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(options.BlockSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.SingleUploadLimit, 1);
        _account = account;
        _options = options;
        _ownsHttp = httpClient is null;
        _http = httpClient ?? CreateHttpClient();
        _http.Timeout = Timeout.InfiniteTimeSpan;
        _time = timeProvider ?? TimeProvider.System;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _containerUrl = account.BlobEndpoint.AbsoluteUri.TrimEnd('/') + "/" + options.Container;
        _namePrefix = options.Prefix.Length == 0 ? "" : options.Prefix + "/";
        Location = $"azure://{account.AccountName}/{options.Container}" + (options.Prefix.Length == 0 ? "" : "/" + options.Prefix);
        _retry = new ResiliencePipelineBuilder { TimeProvider = _time }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<BlobStoreException>(e => e.IsTransient),
                MaxRetryAttempts = Math.Max(1, options.MaxRetries),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = options.RetryBaseDelay,
                MaxDelay = options.RetryMaxDelay,
                DelayGenerator = args => ValueTask.FromResult(
                    args.Outcome.Exception is BlobThrottledException { RetryAfter: { } after }
                        ? (TimeSpan?)(after < options.RetryMaxDelay ? after : options.RetryMaxDelay)
                        : null),
                OnRetry = args =>
                {
                    Interlocked.Increment(ref _retries);
                    var e = args.Outcome.Exception as BlobStoreException;
                    LogRetry(_logger, args.Context.OperationKey ?? "request", e?.BlobName ?? "", args.AttemptNumber + 1, args.RetryDelay, e?.Message ?? "");
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
        if (options.MaxRetries <= 0)
        {
            _retry = ResiliencePipeline.Empty;
        }
    }

    /// <inheritdoc />
    public string Location { get; }

    /// <summary>HTTP requests sent so far (every attempt counts).</summary>
    public long RequestCount => Interlocked.Read(ref _requests);

    /// <summary>Retries made so far.</summary>
    public long RetryCount => Interlocked.Read(ref _retries);

    /// <summary>Creates the container if it does not exist.</summary>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns><see langword="true"/> if it was created.</returns>
    public Task<bool> CreateContainerIfNotExistsAsync(CancellationToken cancellationToken = default)
        => ExecuteAsync("CreateContainer", null, async ct =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Put, _containerUrl + "?restype=container");
            request.Content = new ByteArrayContent([]);
            try
            {
                using var response = await SendAsync(request, null, ct);
                return true;
            }
            catch (BlobStoreException e) when (e.Message.StartsWith("ContainerAlreadyExists", StringComparison.Ordinal))
            {
                return false;
            }
        }, cancellationToken);

    /// <inheritdoc />
    public async Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        if (content.Length <= _options.SingleUploadLimit)
        {
            return await ExecuteAsync("PutBlob", name, async ct =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Put, BlobUrl(name));
                request.Headers.Add("x-ms-blob-type", "BlockBlob");
                request.Content = new ReadOnlyMemoryContent(content);
                request.Content.Headers.ContentLength = content.Length;
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                AddCondition(request, condition);
                using var response = await SendPutAsync(request, name, condition, ct);
                return PropertiesFromHeaders(name, response, content.Length);
            }, cancellationToken);
        }

        // Large object: stage blocks (invisible), then commit them in one conditional Put Block List.
        var uploadId = Guid.NewGuid().ToString("N");
        var blockIds = new List<string>();
        for (var offset = 0; offset < content.Length; offset += _options.BlockSize)
        {
            var slice = content.Slice(offset, Math.Min(_options.BlockSize, content.Length - offset));
            var blockId = Convert.ToBase64String(Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{uploadId}-{blockIds.Count:D6}")));
            blockIds.Add(blockId);
            await ExecuteAsync("PutBlock", name, async ct =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Put, BlobUrl(name, "comp=block&blockid=" + Uri.EscapeDataString(blockId)));
                request.Content = new ReadOnlyMemoryContent(slice);
                request.Content.Headers.ContentLength = slice.Length;
                using var response = await SendAsync(request, name, ct);
                return true;
            }, cancellationToken);
        }

        var xml = new StringBuilder("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        foreach (var id in blockIds)
        {
            xml.Append("<Latest>").Append(id).Append("</Latest>");
        }

        var body = Encoding.UTF8.GetBytes(xml.Append("</BlockList>").ToString());
        return await ExecuteAsync("PutBlockList", name, async ct =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Put, BlobUrl(name, "comp=blocklist"));
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.ContentLength = body.Length;
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/xml");
            AddCondition(request, condition);
            using var response = await SendPutAsync(request, name, condition, ct);
            return PropertiesFromHeaders(name, response, content.Length);
        }, cancellationToken);
    }

    /// <inheritdoc />
    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        if (!range.IsAll && (range.Offset < 0 || range.Length is <= 0))
        {
            throw new BlobInvalidRangeException(Location, name, range);
        }

        return ExecuteAsync("GetBlob", name, async ct =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, BlobUrl(name));
            if (!range.IsAll)
            {
                var end = range.Length is { } l ? (range.Offset + l - 1).ToString(CultureInfo.InvariantCulture) : "";
                request.Headers.Add("x-ms-range", string.Create(CultureInfo.InvariantCulture, $"bytes={range.Offset}-{end}"));
            }

            using var response = await SendAsync(request, name, ct, HttpCompletionOption.ResponseHeadersRead);
            var length = response.Content.Headers.ContentLength
                ?? throw new BlobProtocolException("Get Blob response has no Content-Length", Location, name, RequestId(response));
            if (length > maxLength || length > Array.MaxLength)
            {
                throw new BlobTooLargeException(Location, name, length, maxLength);
            }

            var total = response.Content.Headers.ContentRange?.Length ?? length;
            var properties = PropertiesFromHeaders(name, response, total);
            var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Max(1, length));
            try
            {
                var stream = await response.Content.ReadAsStreamAsync(ct);
                await using (stream)
                {
                    var read = 0;
                    while (read < length)
                    {
                        var n = await stream.ReadAsync(buffer.AsMemory(read, (int)length - read), ct);
                        if (n == 0)
                        {
                            throw new BlobStoreUnavailableException($"Body ended after {read} of {length} bytes", Location, name, RequestId(response));
                        }

                        read += n;
                    }
                }

                return new BlobContent(buffer, (int)length, properties);
            }
            catch
            {
                ArrayPool<byte>.Shared.Return(buffer);
                throw;
            }
        }, cancellationToken);
    }

    /// <inheritdoc />
    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        return ExecuteAsync<BlobProperties?>("GetBlobProperties", name, async ct =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Head, BlobUrl(name));
            try
            {
                using var response = await SendAsync(request, name, ct);
                return PropertiesFromHeaders(name, response, response.Content.Headers.ContentLength ?? 0);
            }
            catch (BlobNotFoundException)
            {
                return null;
            }
        }, cancellationToken);
    }

    /// <inheritdoc />
    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default)
    {
        BlobName.Validate(name);
        return ExecuteAsync("DeleteBlob", name, async ct =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Delete, BlobUrl(name));
            if (ifMatch is not null)
            {
                request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
            }

            try
            {
                using var response = await SendAsync(request, name, ct);
                return true;
            }
            catch (BlobNotFoundException) when (ifMatch is null)
            {
                return false;
            }
            catch (BlobNotFoundException e)
            {
                throw new BlobConditionFailedException(Location, name, e.RequestId, e);
            }
        }, cancellationToken);
    }

    /// <inheritdoc />
    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default)
    {
        BlobName.ValidatePrefix(prefix);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxResults, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxResults, 5000);
        return ExecuteAsync("ListBlobs", prefix, async ct =>
        {
            var query = new StringBuilder(_containerUrl).Append("?restype=container&comp=list&maxresults=")
                .Append(maxResults.ToString(CultureInfo.InvariantCulture))
                .Append("&prefix=").Append(Uri.EscapeDataString(_namePrefix + prefix));
            if (continuation is not null)
            {
                query.Append("&marker=").Append(Uri.EscapeDataString(continuation));
            }

            using var request = new HttpRequestMessage(HttpMethod.Get, WithSas(query.ToString()));
            using var response = await SendAsync(request, null, ct);
            var stream = await response.Content.ReadAsStreamAsync(ct);
            await using (stream)
            {
                return await ParseListAsync(stream, RequestId(response), ct);
            }
        }, cancellationToken);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }

    private async Task<BlobListPage> ParseListAsync(Stream stream, string? requestId, CancellationToken cancellationToken)
    {
        XDocument document;
        try
        {
            using var reader = XmlReader.Create(stream, new XmlReaderSettings { Async = true, DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null });
            document = await XDocument.LoadAsync(reader, LoadOptions.None, cancellationToken);
        }
        catch (XmlException e)
        {
            throw new BlobProtocolException("List Blobs returned malformed XML", Location, null, requestId, e);
        }

        var root = document.Root ?? throw new BlobProtocolException("List Blobs returned no document", Location, null, requestId);
        var items = new List<BlobProperties>();
        foreach (var blob in root.Element("Blobs")?.Elements("Blob") ?? [])
        {
            var fullName = blob.Element("Name")?.Value ?? throw new BlobProtocolException("List Blobs: a blob without a name", Location, null, requestId);
            if (!fullName.StartsWith(_namePrefix, StringComparison.Ordinal))
            {
                continue;
            }

            var name = fullName[_namePrefix.Length..];
            if (!BlobName.IsValid(name))
            {
                // Not ours (written by another tool): ignore rather than fail the listing.
                continue;
            }

            var props = blob.Element("Properties");
            var length = long.Parse(props?.Element("Content-Length")?.Value ?? "0", NumberStyles.None, CultureInfo.InvariantCulture);
            var etag = NormalizeETag(props?.Element("Etag")?.Value ?? "");
            var modified = DateTimeOffset.ParseExact(props?.Element("Last-Modified")?.Value ?? "", "r", CultureInfo.InvariantCulture);
            items.Add(new BlobProperties(name, length, etag, modified));
        }

        var next = root.Element("NextMarker")?.Value;
        return new BlobListPage(items, string.IsNullOrEmpty(next) ? null : next);
    }

    private Task<T> ExecuteAsync<T>(string operation, string? blobName, Func<CancellationToken, Task<T>> attempt, CancellationToken cancellationToken)
    {
        var context = ResilienceContextPool.Shared.Get(operation, cancellationToken);
        return Run();

        async Task<T> Run()
        {
            try
            {
                return await _retry.ExecuteAsync(
                    async (ctx, state) =>
                    {
                        // One deadline per attempt, on the injected clock.
                        using var deadline = new CancellationTokenSource(_options.RequestTimeout, _time);
                        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ctx.CancellationToken, deadline.Token);
                        try
                        {
                            return await state(linked.Token);
                        }
                        catch (OperationCanceledException e) when (deadline.IsCancellationRequested && !ctx.CancellationToken.IsCancellationRequested)
                        {
                            throw new BlobStoreUnavailableException($"{operation} timed out after {_options.RequestTimeout}", Location, blobName, null, e);
                        }
                        catch (HttpRequestException e)
                        {
                            throw new BlobStoreUnavailableException($"{operation} failed: {e.Message}", Location, blobName, null, e);
                        }
                        catch (IOException e)
                        {
                            throw new BlobStoreUnavailableException($"{operation} failed: {e.Message}", Location, blobName, null, e);
                        }
                    },
                    context,
                    attempt);
            }
            finally
            {
                ResilienceContextPool.Shared.Return(context);
            }
        }
    }

    private async Task<HttpResponseMessage> SendPutAsync(HttpRequestMessage request, string name, BlobCondition condition, CancellationToken cancellationToken)
    {
        try
        {
            return await SendAsync(request, name, cancellationToken);
        }
        catch (BlobConditionFailedException e) when (condition.Kind == BlobConditionKind.CreateOnly)
        {
            throw new BlobAlreadyExistsException(Location, name, e.RequestId, e);
        }
        catch (BlobNotFoundException e) when (condition.Kind == BlobConditionKind.IfMatch)
        {
            throw new BlobConditionFailedException(Location, name, e.RequestId, e);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, string? name, CancellationToken cancellationToken, HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        if (!request.RequestUri!.Query.Contains("sig=", StringComparison.Ordinal) && _account.SharedAccessSignature is not null)
        {
            request.RequestUri = new Uri(WithSas(request.RequestUri.AbsoluteUri));
        }

        request.Headers.Add("x-ms-version", ApiVersion);
        request.Headers.Add("x-ms-date", _time.GetUtcNow().ToString("r", CultureInfo.InvariantCulture));
        request.Headers.Add("x-ms-client-request-id", Guid.NewGuid().ToString());
        if (_account.AccountKey is { } key)
        {
            SharedKeySigner.Sign(request, _account.AccountName, key);
        }

        Interlocked.Increment(ref _requests);
        var response = await _http.SendAsync(request, completion, cancellationToken);
        var requestId = RequestId(response);
        LogResponse(_logger, request.Method.Method, name ?? "", (int)response.StatusCode, requestId);
        if (response.IsSuccessStatusCode)
        {
            return response;
        }

        using (response)
        {
            throw await ErrorAsync(response, name, requestId, cancellationToken);
        }
    }

    private async Task<BlobStoreException> ErrorAsync(HttpResponseMessage response, string? name, string? requestId, CancellationToken cancellationToken)
    {
        var code = response.Headers.TryGetValues("x-ms-error-code", out var codes) ? codes.FirstOrDefault() : null;
        string? message = null;
        if (response.Content.Headers.ContentLength is > 0 and < 64 * 1024)
        {
            try
            {
                var body = await response.Content.ReadAsStringAsync(cancellationToken);
                var error = XDocument.Parse(body).Root;
                code ??= error?.Element("Code")?.Value;
                message = error?.Element("Message")?.Value?.Split('\n')[0];
            }
            catch (XmlException)
            {
                // A non-XML error body: the status code says enough.
            }
        }

        var status = (int)response.StatusCode;
        var what = $"{code ?? "HTTP " + status.ToString(CultureInfo.InvariantCulture)}{(message is null ? "" : ": " + message)}";
        return status switch
        {
            404 when code is "ContainerNotFound" => new BlobStoreException(what, Location, name, requestId),
            404 when name is not null => new BlobNotFoundException(Location, name, requestId),
            409 when code is "BlobAlreadyExists" && name is not null => new BlobAlreadyExistsException(Location, name, requestId),
            412 when name is not null => new BlobConditionFailedException(Location, name, requestId),
            416 when name is not null => new BlobInvalidRangeException(Location, name, default, requestId),
            429 => new BlobThrottledException(Location, name, RetryAfter(response), requestId),
            503 when code is "ServerBusy" or null => new BlobThrottledException(Location, name, RetryAfter(response), requestId),
            401 or 403 => new BlobAccessDeniedException(what, Location, name, requestId),
            408 or >= 500 => new BlobStoreUnavailableException(what, Location, name, requestId),
            _ => new BlobStoreException(what, Location, name, requestId),
        };
    }

    private static TimeSpan? RetryAfter(HttpResponseMessage response)
    {
        var header = response.Headers.RetryAfter;
        if (header?.Delta is { } delta)
        {
            return delta;
        }

        return null;
    }

    private BlobProperties PropertiesFromHeaders(string name, HttpResponseMessage response, long length)
    {
        var etag = response.Headers.ETag?.Tag ?? (response.Headers.TryGetValues("ETag", out var values) ? values.First() : "");
        var modified = response.Content.Headers.LastModified ?? _time.GetUtcNow();
        return new BlobProperties(name, length, NormalizeETag(etag), modified);
    }

    private static void AddCondition(HttpRequestMessage request, BlobCondition condition)
    {
        switch (condition.Kind)
        {
            case BlobConditionKind.CreateOnly:
                request.Headers.TryAddWithoutValidation("If-None-Match", "*");
                break;
            case BlobConditionKind.IfMatch:
                request.Headers.TryAddWithoutValidation("If-Match", condition.ETag);
                break;
            default:
                break;
        }
    }

    private static string NormalizeETag(string etag) => etag.Length > 0 && etag[0] != '"' ? "\"" + etag + "\"" : etag;

    private static string? RequestId(HttpResponseMessage response)
        => response.Headers.TryGetValues("x-ms-request-id", out var ids) ? ids.FirstOrDefault() : null;

    private string BlobUrl(string name, string? query = null)
    {
        var url = _containerUrl + "/" + _namePrefix + name;
        return WithSas(query is null ? url : url + "?" + query);
    }

    private string WithSas(string url)
    {
        if (_account.SharedAccessSignature is not { } sas)
        {
            return url;
        }

        return url + (url.Contains('?', StringComparison.Ordinal) ? "&" : "?") + sas;
    }

    private static HttpClient CreateHttpClient()
    {
        // The client owns the handler (disposeHandler: true) and the store owns the client.
#pragma warning disable CA2000
        return new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5), AutomaticDecompression = DecompressionMethods.None }, disposeHandler: true);
#pragma warning restore CA2000
    }

    private static bool IsValidContainer(string name)
        => name.Length is >= 3 and <= 63
           && name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-')
           && name[0] != '-' && name[^1] != '-' && !name.Contains("--", StringComparison.Ordinal);
}
