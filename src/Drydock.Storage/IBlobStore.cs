namespace Drydock.Storage;

/// <summary>
/// A flat namespace of immutable-by-default objects ("blobs"): the one seam between Drydock and object storage.
/// </summary>
/// <remarks>
/// Contract every implementation follows (tests/Drydock.Storage.Tests runs the same suite against each):
/// <list type="bullet">
/// <item>A put is atomic: readers see the old state or the whole new object, never a torn one.</item>
/// <item><see cref="BlobCondition.CreateOnly"/> fails with <see cref="BlobAlreadyExistsException"/> when the name exists;
/// of two racing creators exactly one wins.</item>
/// <item><see cref="BlobCondition.IfMatch"/> replaces or deletes only when the current ETag matches, else
/// <see cref="BlobConditionFailedException"/>.</item>
/// <item>Names are validated by <see cref="BlobName.Validate"/>; listing returns names in ordinal order.</item>
/// <item>Errors are typed (<see cref="BlobStoreException"/> and subclasses) and name the blob and location.</item>
/// </list>
/// </remarks>
public interface IBlobStore
{
    /// <summary>Where this store points, for messages. Never contains a secret (keys and SAS tokens are stripped).</summary>
    string Location { get; }

    /// <summary>Writes a whole object.</summary>
    /// <param name="name">The object name (see <see cref="BlobName"/>).</param>
    /// <param name="content">The bytes; the store does not keep a reference after the task completes.</param>
    /// <param name="condition">Create-only, unconditional overwrite, or compare-and-swap on an ETag.</param>
    /// <param name="cancellationToken">Cancels the write; a cancelled write leaves no visible object.</param>
    /// <returns>The properties of the object as written.</returns>
    Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default);

    /// <summary>Reads an object or a byte range of it.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="range">The range to read; <see cref="BlobRange.All"/> for the whole object.</param>
    /// <param name="maxLength">The most bytes the caller accepts; a larger object or range fails with
    /// <see cref="BlobTooLargeException"/> before anything is allocated.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The bytes in a pooled buffer the caller disposes.</returns>
    Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default);

    /// <summary>Reads an object's properties.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The properties, or <see langword="null"/> when the object does not exist.</returns>
    Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>Deletes an object.</summary>
    /// <param name="name">The object name.</param>
    /// <param name="ifMatch">When set, deletes only if the current ETag matches (else <see cref="BlobConditionFailedException"/>).</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns><see langword="true"/> if an object was deleted, <see langword="false"/> if none existed.</returns>
    Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default);

    /// <summary>Lists one page of objects whose names start with <paramref name="prefix"/>, in ordinal name order.</summary>
    /// <param name="prefix">The name prefix ("" for everything).</param>
    /// <param name="continuation">The token from the previous page, or <see langword="null"/> for the first.</param>
    /// <param name="maxResults">The most items in this page (1..5000).</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The page and the token for the next one (<see langword="null"/> at the end).</returns>
    Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default);

    /// <summary>Makes every put that has completed durable, for stores that defer part of that work (the filesystem
    /// store batches directory fsyncs here). Callers flush before publishing anything that refers to earlier objects.
    /// A put's object is never visible torn, flushed or not.</summary>
    /// <param name="cancellationToken">Cancels the flush.</param>
    /// <returns>A task.</returns>
    Task FlushAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;
}
