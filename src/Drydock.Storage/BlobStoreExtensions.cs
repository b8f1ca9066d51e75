using System.Runtime.CompilerServices;

namespace Drydock.Storage;

/// <summary>Conveniences over <see cref="IBlobStore"/>.</summary>
public static class BlobStoreExtensions
{
    /// <summary>The page size used by <see cref="ListAsync"/>.</summary>
    public const int DefaultPageSize = 1000;

    /// <summary>Lists every object under a prefix, following continuation tokens.</summary>
    /// <param name="store">The store.</param>
    /// <param name="prefix">The name prefix.</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>The objects in ordinal name order.</returns>
    public static async IAsyncEnumerable<BlobProperties> ListAsync(this IBlobStore store, string prefix, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        string? continuation = null;
        do
        {
            var page = await store.ListPageAsync(prefix, continuation, DefaultPageSize, cancellationToken);
            foreach (var item in page.Items)
            {
                yield return item;
            }

            continuation = page.Continuation;
        }
        while (continuation is not null);
    }

    /// <summary>Whether an object exists.</summary>
    /// <param name="store">The store.</param>
    /// <param name="name">The object name.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns><see langword="true"/> if it exists.</returns>
    public static async Task<bool> ExistsAsync(this IBlobStore store, string name, CancellationToken cancellationToken = default)
        => await store.GetPropertiesAsync(name, cancellationToken) is not null;

    /// <summary>Reads a whole object.</summary>
    /// <param name="store">The store.</param>
    /// <param name="name">The object name.</param>
    /// <param name="maxLength">The size cap.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The content.</returns>
    public static Task<BlobContent> GetAsync(this IBlobStore store, string name, long maxLength, CancellationToken cancellationToken = default)
        => store.GetAsync(name, BlobRange.All, maxLength, cancellationToken);
}
