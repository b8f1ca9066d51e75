using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Benchmarks.Transfer;

// Drops chunk puts (and says no chunk exists); every other object goes to the inner store.
internal sealed class ChunkDroppingStore(IBlobStore inner) : IBlobStore
{
    public string Location => inner.Location;

    public Task<BlobProperties> PutAsync(string name, ReadOnlyMemory<byte> content, BlobCondition condition, CancellationToken cancellationToken = default)
        => name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal)
            ? Task.FromResult(new BlobProperties(name, content.Length, "\"dropped\"", DateTimeOffset.UnixEpoch))
            : inner.PutAsync(name, content, condition, cancellationToken);

    public Task<BlobContent> GetAsync(string name, BlobRange range, long maxLength, CancellationToken cancellationToken = default)
        => inner.GetAsync(name, range, maxLength, cancellationToken);

    public Task<BlobProperties?> GetPropertiesAsync(string name, CancellationToken cancellationToken = default)
        => name.StartsWith(ObjectNames.ChunksPrefix, StringComparison.Ordinal)
            ? Task.FromResult<BlobProperties?>(null)
            : inner.GetPropertiesAsync(name, cancellationToken);

    public Task<bool> DeleteAsync(string name, string? ifMatch = null, CancellationToken cancellationToken = default)
        => inner.DeleteAsync(name, ifMatch, cancellationToken);

    public Task<BlobListPage> ListPageAsync(string prefix, string? continuation, int maxResults, CancellationToken cancellationToken = default)
        => inner.ListPageAsync(prefix, continuation, maxResults, cancellationToken);

    public Task FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);
}
