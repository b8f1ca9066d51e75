using Drydock.Repository.Format;
using Drydock.Storage;

namespace Drydock.Repository.Maintenance;

/// <summary>One point as seen by a maintenance scan.</summary>
/// <param name="Point">The point.</param>
/// <param name="Manifest">The verified manifest, or null if it could not be read.</param>
/// <param name="Error">Why the manifest could not be read.</param>
internal sealed record ScannedPoint(PointRef Point, PointManifest? Manifest, RepositoryException? Error);

/// <summary>Loads every manifest in the repository, recording (not throwing) per-point failures.</summary>
internal static class RepositoryScan
{
    public static async Task<List<ScannedPoint>> PointsAsync(BackupRepository repository, CancellationToken cancellationToken)
    {
        var result = new List<ScannedPoint>();
        await foreach (var item in repository.Store.ListAsync(ObjectNames.PointsPrefix, cancellationToken))
        {
            if (!ObjectNames.TryParsePoint(item.Name, ObjectNames.PointsPrefix, out var point))
            {
                continue;
            }

            try
            {
                result.Add(new ScannedPoint(point, await repository.ReadManifestAsync(point, cancellationToken), null));
            }
            catch (RepositoryException e)
            {
                result.Add(new ScannedPoint(point, null, e));
            }
        }

        return result;
    }

    public static async Task<Dictionary<ChunkId, BlobProperties>> ShardedAsync(IBlobStore store, string prefix, CancellationToken cancellationToken)
    {
        var result = new Dictionary<ChunkId, BlobProperties>();
        await foreach (var item in store.ListAsync(prefix, cancellationToken))
        {
            if (ObjectNames.TryParseSharded(item.Name, prefix, out var id))
            {
                result[id] = item;
            }
        }

        return result;
    }
}
