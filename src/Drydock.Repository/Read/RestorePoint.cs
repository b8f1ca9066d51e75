using Drydock.Repository.Format;

namespace Drydock.Repository.Read;

/// <summary>A committed point whose manifest and lineage were checked; open its disks to read them.</summary>
public sealed class RestorePoint
{
    private readonly BackupRepository _repository;

    internal RestorePoint(BackupRepository repository, PointRef point, PointManifest manifest)
    {
        _repository = repository;
        Point = point;
        Manifest = manifest;
    }

    /// <summary>The point.</summary>
    public PointRef Point { get; }

    /// <summary>The verified manifest.</summary>
    public PointManifest Manifest { get; }

    /// <summary>Loads and checks a disk's index.</summary>
    /// <param name="name">The disk name.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The reader.</returns>
    public async Task<DiskReader> OpenDiskAsync(string name, CancellationToken cancellationToken = default)
    {
        var disk = Manifest.Disks.FirstOrDefault(d => d.Name == name)
            ?? throw new ArgumentException($"point {Point} has no disk '{name}'", nameof(name));
        var index = await _repository.ReadIndexAsync(disk, new RepositoryLocationInfo(Point, name), cancellationToken);
        return new DiskReader(_repository, Point, disk, index);
    }
}
