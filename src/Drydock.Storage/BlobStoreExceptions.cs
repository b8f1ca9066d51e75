namespace Drydock.Storage;

/// <summary>A blob store operation failed. Subclasses say how; the message names the object and the store.</summary>
public class BlobStoreException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="location">The store's <see cref="IBlobStore.Location"/>.</param>
    /// <param name="blobName">The object concerned, if any.</param>
    /// <param name="requestId">The service's request id, if any.</param>
    /// <param name="innerException">The cause.</param>
    public BlobStoreException(string message, string location, string? blobName, string? requestId = null, Exception? innerException = null)
        : base(Compose(message, location, blobName, requestId), innerException)
    {
        Location = location;
        BlobName = blobName;
        RequestId = requestId;
    }

    /// <summary>The store's location.</summary>
    public string Location { get; }

    /// <summary>The object concerned, if any.</summary>
    public string? BlobName { get; }

    /// <summary>The service's request id (Azure <c>x-ms-request-id</c>), if any.</summary>
    public string? RequestId { get; }

    /// <summary>Whether retrying the same operation later may succeed.</summary>
    public virtual bool IsTransient => false;

    private static string Compose(string message, string location, string? blobName, string? requestId)
    {
        var where = blobName is null ? location : location.EndsWith('/') ? location + blobName : $"{location}/{blobName}";
        return requestId is null ? $"{message} ({where})" : $"{message} ({where}, request id {requestId})";
    }
}

/// <summary>The object does not exist.</summary>
public sealed class BlobNotFoundException(string location, string blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException("Object not found", location, blobName, requestId, innerException);

/// <summary>A create-only put found the name already taken.</summary>
public sealed class BlobAlreadyExistsException(string location, string blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException("Object already exists", location, blobName, requestId, innerException);

/// <summary>An ETag condition did not hold (someone else changed or removed the object).</summary>
public sealed class BlobConditionFailedException(string location, string blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException("Object changed since it was read (ETag mismatch)", location, blobName, requestId, innerException);

/// <summary>The store asked us to slow down (HTTP 429 or 503 "ServerBusy").</summary>
public sealed class BlobThrottledException(string location, string? blobName, TimeSpan? retryAfter, string? requestId = null, Exception? innerException = null)
    : BlobStoreException("Storage is throttling requests", location, blobName, requestId, innerException)
{
    /// <summary>The delay the service asked for, if it said.</summary>
    public TimeSpan? RetryAfter { get; } = retryAfter;

    /// <inheritdoc />
    public override bool IsTransient => true;
}

/// <summary>The store failed or timed out in a way that may pass (5xx, connection reset, timeout).</summary>
public sealed class BlobStoreUnavailableException(string message, string location, string? blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException(message, location, blobName, requestId, innerException)
{
    /// <inheritdoc />
    public override bool IsTransient => true;
}

/// <summary>The credentials were refused (HTTP 401/403, or filesystem permission denied).</summary>
public sealed class BlobAccessDeniedException(string message, string location, string? blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException(message, location, blobName, requestId, innerException);

/// <summary>An object or range is larger than the caller's cap.</summary>
public sealed class BlobTooLargeException(string location, string blobName, long length, long maxLength)
    : BlobStoreException($"Object is {length} bytes, over the cap of {maxLength}", location, blobName)
{
    /// <summary>The size found.</summary>
    public long Length { get; } = length;

    /// <summary>The cap.</summary>
    public long MaxLength { get; } = maxLength;
}

/// <summary>The requested range starts beyond the end of the object.</summary>
public sealed class BlobInvalidRangeException(string location, string blobName, BlobRange range, string? requestId = null)
    : BlobStoreException($"Range {range} is outside the object", location, blobName, requestId);

/// <summary>The store is out of space (ENOSPC, quota).</summary>
public sealed class BlobStoreFullException(string location, string? blobName, Exception? innerException = null)
    : BlobStoreException("Storage is full", location, blobName, null, innerException);

/// <summary>The store answered something this client does not understand.</summary>
public sealed class BlobProtocolException(string message, string location, string? blobName, string? requestId = null, Exception? innerException = null)
    : BlobStoreException(message, location, blobName, requestId, innerException);
