using System.Globalization;
using Drydock.Hypervisor;
using Drydock.Repository;
using Drydock.Repository.Read;
using Drydock.Transfer.Restore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Transfer.Jobs;

/// <summary>Which point and disks to restore.</summary>
public sealed record RestoreJobRequest
{
    /// <summary>The domain: its UUID (as stored in the repository) or its name.</summary>
    public required string Domain { get; init; }

    /// <summary>The tenant. Default "default".</summary>
    public string Tenant { get; init; } = "default";

    /// <summary>The point's sequence, or null for the newest.</summary>
    public long? Sequence { get; init; }

    /// <summary>Disks to restore, or null for all.</summary>
    public IReadOnlyList<string>? Disks { get; init; }
}

/// <summary>A finished restore.</summary>
public sealed record RestoreJobResult
{
    /// <summary>The point restored.</summary>
    public required PointRef Point { get; init; }

    /// <summary>The domain's name as the point's manifest recorded it.</summary>
    public string? DomainName { get; init; }

    /// <summary>Per disk: what was done, and where it went (a file path or an NBD URI).</summary>
    public required IReadOnlyList<(DiskRestoreResult Result, string Destination)> Disks { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>Restores a point: to new local images, or into a (paused or shut-off) domain's disks through the driver's
/// restore export, optionally changed blocks only.</summary>
public sealed partial class RestoreJob
{
    private readonly BackupRepository _repository;
    private readonly RestorePipelineOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    /// <summary>Creates the job runner.</summary>
    /// <param name="repository">The repository.</param>
    /// <param name="options">The pipeline's settings.</param>
    /// <param name="timeProvider">Clock.</param>
    /// <param name="logger">Logger.</param>
    public RestoreJob(BackupRepository repository, RestorePipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _repository = repository;
        _options = options ?? new RestorePipelineOptions();
        _time = timeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Finds the domain's points (by UUID or name), oldest first.</summary>
    /// <param name="domain">UUID or name. An id that is not a UUID is mapped as <see cref="DomainKeys.ToRepositoryId"/> does.
    /// A name is matched against the newest point of every domain of the tenant.</param>
    /// <param name="tenant">The tenant.</param>
    /// <param name="cancellationToken">Cancels the listing.</param>
    /// <returns>The points; empty when the tenant has none of that domain.</returns>
    /// <exception cref="TransferRequestException">The name belongs to several domains.</exception>
    public async Task<IReadOnlyList<PointRef>> FindPointsAsync(string domain, string tenant = "default", CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(domain);
        var byId = await _repository.ListPointsAsync(tenant, DomainKeys.ToRepositoryId(domain), cancellationToken);
        if (byId.Count > 0)
        {
            return [.. byId.OrderBy(p => p.Sequence)];
        }

        var matches = new List<(Guid Domain, List<PointRef> Points)>();
        foreach (var group in (await _repository.ListPointsAsync(tenant, null, cancellationToken)).GroupBy(p => p.DomainId))
        {
            var points = group.OrderBy(p => p.Sequence).ToList();
            var newest = await _repository.ReadManifestAsync(points[^1], cancellationToken);
            if (string.Equals(newest.DomainName, domain, StringComparison.Ordinal))
            {
                matches.Add((group.Key, points));
            }
        }

        return matches.Count switch
        {
            0 => [],
            1 => matches[0].Points,
            _ => throw new TransferRequestException(
                $"Several domains of tenant '{tenant}' are named '{domain}': {string.Join(", ", matches.Select(m => m.Domain.ToString("D")))}; name one by UUID."),
        };
    }

    /// <summary>Restores to new images <c>DIR/&lt;disk&gt;.raw</c> or <c>.qcow2</c>.</summary>
    /// <param name="request">Point and disks.</param>
    /// <param name="directory">The directory (created if missing); existing images are never overwritten.</param>
    /// <param name="format">Image format.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the restore; no partial image is left under a final name.</param>
    /// <returns>What was done.</returns>
    /// <exception cref="TransferRequestException">No such point or disk, or an image exists already.</exception>
    public async Task<RestoreJobResult> ToDirectoryAsync(RestoreJobRequest request, string directory, DiskImageFormat format, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var started = _time.GetTimestamp();
        var point = await OpenAsync(request, cancellationToken);
        var disks = SelectDisks(request, point);
        var extension = format == DiskImageFormat.Qcow2 ? ".qcow2" : ".raw";
        var paths = disks.Select(d => Path.Combine(directory, d + extension)).ToList();
        Directory.CreateDirectory(directory);
        if (paths.FirstOrDefault(Path.Exists) is { } existing)
        {
            throw new TransferRequestException($"'{existing}' exists; a restore never overwrites an image.");
        }

        LogRestoring(_logger, point.Point.DomainId, point.Point.Sequence, directory);
        var pipeline = new RestorePipeline(_options, _time, _logger);
        var results = new List<(DiskRestoreResult, string)>(disks.Count);
        try
        {
            for (var i = 0; i < disks.Count; i++)
            {
                var reader = await point.OpenDiskAsync(disks[i], cancellationToken);
                results.Add((await pipeline.ToFileAsync(reader, paths[i], format, progress, cancellationToken), paths[i]));
            }
        }
        catch (OperationCanceledException e) when (cancellationToken.IsCancellationRequested)
        {
            // The pipeline removed the image it was writing; the ones finished before are complete and stay.
            throw new JobCancelledException(
                results.Count == 0
                    ? "no image was written (the partial one was removed)"
                    : $"the partial image was removed; complete images kept: {string.Join(", ", results.Select(r => r.Item2))}",
                e,
                cancellationToken);
        }

        return new RestoreJobResult { Point = point.Point, DomainName = point.Manifest.DomainName, Disks = results, Elapsed = _time.GetElapsedTime(started) };
    }

    /// <summary>Restores into a domain's disks through the driver's restore export. The domain must not be running (F48).</summary>
    /// <param name="request">Point and disks.</param>
    /// <param name="driver">The host's driver.</param>
    /// <param name="domainId">The domain on that host.</param>
    /// <param name="changedOnly">Write only chunks that differ from the point.</param>
    /// <param name="progress">Per-disk progress.</param>
    /// <param name="cancellationToken">Cancels the restore; the export is closed.</param>
    /// <returns>What was done.</returns>
    /// <exception cref="TransferRequestException">The domain runs, or a point, disk or size does not match.</exception>
    public async Task<RestoreJobResult> IntoDomainAsync(RestoreJobRequest request, IHypervisorDriver driver, string domainId, bool changedOnly, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var started = _time.GetTimestamp();
        var domain = await driver.GetDomainAsync(domainId, cancellationToken);
        if (domain.State == DomainState.Running)
        {
            throw new TransferRequestException(domain.StateDetail is { } detail
                ? $"Domain '{domain.Name}' ({domain.Id}) is running: {detail}; a restore never writes under a running guest."
                : $"Domain '{domain.Name}' ({domain.Id}) is running: stop or pause it first; a restore never writes under a running guest.");
        }

        var point = await OpenAsync(request, cancellationToken);
        var disks = SelectDisks(request, point);
        foreach (var disk in disks)
        {
            var target = domain.FindDisk(disk)
                ?? throw new TransferRequestException($"Domain '{domain.Name}' has no disk '{disk}' to restore point #{point.Point.Sequence} into.") { Disk = disk };
            var size = point.Manifest.Disks.Single(d => d.Name == disk).VirtualSize;
            if (size < 0 || target.VirtualSize != (ulong)size)
            {
                throw SizeMismatch(domain, disk, size, target.VirtualSize);
            }
        }

        LogRestoring(_logger, point.Point.DomainId, point.Point.Sequence, domain.Id);

        // A shut-off domain is started paused when the driver can only export a live domain's disks (libvirt, sim),
        // and stopped again afterwards: the restore leaves the domain as it found it.
        var startedPaused = false;
        RestoreExport export;
        try
        {
            export = await driver.OpenRestoreExportAsync(domain.Id, disks, cancellationToken);
        }
        catch (DomainStateException) when (domain.State == DomainState.ShutOff)
        {
            await driver.StartAsync(domain.Id, paused: true, cancellationToken);
            startedPaused = true;
            try
            {
                export = await driver.OpenRestoreExportAsync(domain.Id, disks, cancellationToken);
            }
            catch
            {
                await driver.DestroyAsync(domain.Id, CancellationToken.None);
                throw;
            }
        }

        try
        {
            var pipeline = new RestorePipeline(_options, _time, _logger);
            var readers = new List<(DiskReader Reader, RestoreExportDisk Target)>(disks.Count);
            foreach (var disk in disks)
            {
                var target = export.Disks.FirstOrDefault(d => d.Target == disk)
                    ?? throw new TransferException($"The restore export of domain '{domain.Name}' lacks disk '{disk}'.") { Disk = disk };
                var reader = await point.OpenDiskAsync(disk, cancellationToken);
                if (reader.Size < 0 || (ulong)reader.Size != target.VirtualSize)
                {
                    throw SizeMismatch(domain, disk, reader.Size, target.VirtualSize);
                }

                readers.Add((reader, target));
            }

            var mode = changedOnly ? RestoreWriteMode.ChangedOnly : RestoreWriteMode.Overwrite;
            var results = new List<(DiskRestoreResult, string)>(readers.Count);
            foreach (var (reader, target) in readers)
            {
                try
                {
                    var result = await pipeline.ToNbdAsync(reader, target.Endpoint, mode, progress, cancellationToken);
                    LogDiskRestored(_logger, domain.Id, target.Target, result.ChunksWritten, result.ChunksSkipped);
                    results.Add((result, target.Endpoint.ToString()));
                }
                catch (OperationCanceledException e) when (cancellationToken.IsCancellationRequested)
                {
                    throw new JobCancelledException(
                        $"disk {target.Target} of domain '{domain.Name}' is partly overwritten: rerun the restore before starting the domain (the restore export is closed)",
                        e,
                        cancellationToken);
                }
            }

            return new RestoreJobResult { Point = point.Point, DomainName = point.Manifest.DomainName, Disks = results, Elapsed = _time.GetElapsedTime(started) };
        }
        finally
        {
            try
            {
                await driver.CloseRestoreExportAsync(domain.Id, export.Id, CancellationToken.None);
            }
            finally
            {
                if (startedPaused)
                {
                    await driver.DestroyAsync(domain.Id, CancellationToken.None);
                }
            }
        }
    }

    private static TransferRequestException SizeMismatch(DomainInfo domain, string disk, long pointSize, ulong diskSize) =>
        new(string.Create(CultureInfo.InvariantCulture, $"Disk '{disk}' of domain '{domain.Name}' is {diskSize} bytes but the point's disk is {pointSize}: resize it first or restore to a file."))
        {
            Disk = disk,
        };

    private static List<string> SelectDisks(RestoreJobRequest request, RestorePoint point)
    {
        var names = point.Manifest.Disks.Select(d => d.Name).ToList();
        if (request.Disks is null)
        {
            return names;
        }

        foreach (var disk in request.Disks)
        {
            if (!names.Contains(disk, StringComparer.Ordinal))
            {
                throw new TransferRequestException($"Point #{point.Point.Sequence} of domain '{point.Manifest.DomainName}' has no disk '{disk}' (it has {string.Join(", ", names)}).") { Disk = disk };
            }
        }

        return [.. request.Disks.Distinct(StringComparer.Ordinal)];
    }

    private async Task<RestorePoint> OpenAsync(RestoreJobRequest request, CancellationToken cancellationToken)
    {
        var points = await FindPointsAsync(request.Domain, request.Tenant, cancellationToken);
        if (points.Count == 0)
        {
            throw new TransferRequestException($"Tenant '{request.Tenant}' has no restore point of domain '{request.Domain}'.");
        }

        PointRef point;
        if (request.Sequence is { } sequence)
        {
            if (!points.Any(p => p.Sequence == sequence))
            {
                throw new TransferRequestException(string.Create(CultureInfo.InvariantCulture, $"Domain '{request.Domain}' has no point #{sequence}."));
            }

            point = points.First(p => p.Sequence == sequence);
        }
        else
        {
            point = points[^1];
        }

        return await _repository.OpenPointAsync(point, cancellationToken);
    }
}
