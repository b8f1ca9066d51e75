using System.Globalization;
using Drydock.Hypervisor.Qemu.Qmp;

namespace Drydock.Hypervisor.Qemu;

public sealed partial class QemuDriver
{
    /// <inheritdoc/>
    public async Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var qmp = await ConnectOrThrowAsync(domain, "list checkpoints", cancellationToken);
        var nodes = await QueryAsync(domain, qmp, "list checkpoints", cancellationToken);
        return [.. Checkpoints(domain, nodes).OrderBy(c => c.CreatedAt ?? DateTimeOffset.MinValue).ThenBy(c => c.Name, StringComparer.Ordinal)];
    }

    /// <inheritdoc/>
    public async Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default)
    {
        var info = (await ListCheckpointsAsync(domainId, cancellationToken)).FirstOrDefault(c => c.Name == checkpoint)
            ?? throw new CheckpointNotFoundException(domainId, checkpoint);
        return CheckpointXml.Format(new CheckpointDocument
        {
            Name = info.Name,
            CreationTime = info.CreatedAt,
            Disks = [.. Find(domainId).Options.Disks.Select(d => new CheckpointDocumentDisk(d.Target, info.Disks.FirstOrDefault(cd => cd.Target == d.Target)?.Bitmap))],
        });
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        DrydockNames.ValidateOwnedCheckpoint(domainId, checkpoint);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await ConnectOrThrowAsync(domain, "create a checkpoint", cancellationToken);
            var nodes = await QueryAsync(domain, qmp, "create a checkpoint", cancellationToken);
            var disks = SelectDisks(domain, targets).Where(d => Node(nodes, d)?.Driver == DiskFormats.Qcow2).ToList();
            if (disks.Count == 0)
            {
                throw new HypervisorNotSupportedException("checkpoints on disks that are not qcow2", DriverName, domainId);
            }

            foreach (var disk in disks)
            {
                if (Node(nodes, disk)!.Bitmaps.Any(b => b.Name == checkpoint))
                {
                    throw new CheckpointExistsException(domainId, checkpoint, disk.Target, $"Bitmap already exists: {checkpoint}");
                }
            }

            try
            {
                await qmp.TransactionAsync(disks.Select(d => ("block-dirty-bitmap-add", QmpCommands.BitmapAdd(d.NodeName, checkpoint, persistent: true))), cancellationToken);
            }
            catch (QmpException ex) when (ex.Description.Contains("already exists", StringComparison.OrdinalIgnoreCase))
            {
                throw new CheckpointExistsException(domainId, checkpoint, null, ex.Description, ex.ErrorClass);
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
            {
                throw Translate(ex, domainId, $"create checkpoint '{checkpoint}'");
            }

            return new CheckpointInfo
            {
                Name = checkpoint,
                DomainId = domainId,
                CreatedAt = CreatedAt(checkpoint),
                Disks = [.. disks.Select(d => new CheckpointDisk(d.Target, checkpoint))],
            };
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        CheckpointDocument document;
        try
        {
            document = CheckpointXml.Parse(checkpointXml);
        }
        catch (FormatException ex)
        {
            throw new HypervisorException($"Cannot redefine a checkpoint on domain '{domainId}': {ex.Message}", domainId, innerException: ex);
        }

        DrydockNames.ValidateOwnedCheckpoint(domainId, document.Name);
        var qmp = await ConnectOrThrowAsync(domain, "redefine a checkpoint", cancellationToken);
        var nodes = await QueryAsync(domain, qmp, "redefine a checkpoint", cancellationToken);

        // Bitmaps are the only record here: redefining is validating that every one the XML names is present and usable.
        foreach (var disk in document.BitmapDisks)
        {
            var options = domain.Options.Disks.FirstOrDefault(d => d.Target == disk.Target)
                ?? throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"the domain has no disk '{disk.Target}'");
            var bitmap = Node(nodes, options)?.Bitmaps.FirstOrDefault(b => b.Name == disk.Bitmap && b.Persistent)
                ?? throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"bitmap '{disk.Bitmap}' is missing");
            if (bitmap.Inconsistent)
            {
                throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"bitmap '{disk.Bitmap}' is inconsistent (the image was not closed cleanly)");
            }
        }

        return new CheckpointInfo
        {
            Name = document.Name,
            DomainId = domainId,
            CreatedAt = document.CreationTime ?? CreatedAt(document.Name),
            Parent = document.Parent,
            Disks = document.BitmapDisks,
        };
    }

    /// <inheritdoc/>
    public async Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        if (!DrydockNames.IsOwned(checkpoint))
        {
            throw new ForeignCheckpointException(domainId, checkpoint);
        }

        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await ConnectOrThrowAsync(domain, "delete a checkpoint", cancellationToken);
            var nodes = await QueryAsync(domain, qmp, "delete a checkpoint", cancellationToken);
            var holders = domain.Options.Disks.Where(d => Node(nodes, d)?.Bitmaps.Any(b => b.Name == checkpoint && b.Persistent) == true).ToList();
            if (holders.Count == 0)
            {
                throw new CheckpointNotFoundException(domainId, checkpoint);
            }

            if (domain.Captures.Values.FirstOrDefault(c => c.NewCheckpoint == checkpoint) is { } capture)
            {
                throw new DomainBusyException(domainId, capture.Id, $"checkpoint '{checkpoint}' belongs to capture '{capture.Id}', which is still running");
            }

            if (mode == CheckpointDeleteMode.MetadataOnly)
            {
                return; // No metadata apart from the bitmaps.
            }

            foreach (var disk in holders)
            {
                try
                {
                    await qmp.RemoveBitmapAsync(disk.NodeName, checkpoint, cancellationToken);
                }
                catch (QmpException ex) when (ex.Description.Contains("busy", StringComparison.OrdinalIgnoreCase) || ex.Description.Contains("in use", StringComparison.OrdinalIgnoreCase))
                {
                    throw new DomainBusyException(domainId, null, ex.Description);
                }
                catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
                {
                    throw Translate(ex, domainId, $"delete checkpoint '{checkpoint}'", disk.Target);
                }
            }
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var qmp = await ConnectOrThrowAsync(domain, "check disk health", cancellationToken);
        var nodes = await QueryAsync(domain, qmp, "check disk health", cancellationToken);
        var health = new List<DiskHealth>();
        foreach (var disk in domain.Options.Disks)
        {
            var info = OnlineDisk(domain, disk, nodes);
            var node = Node(nodes, disk)!;
            health.Add(new DiskHealth
            {
                Target = disk.Target,
                Identity = info.Identity,
                VirtualSize = info.VirtualSize,
                SupportsCheckpoints = info.SupportsCheckpoints,
                Bitmaps = [.. node.Bitmaps.Where(b => b.Persistent && !CaptureNames.TryParse(b.Name, out _, out _)).Select(b => new BitmapHealth
                {
                    Checkpoint = b.Name,
                    Bitmap = b.Name,
                    Recording = b.Recording,
                    Busy = b.Busy,
                    Inconsistent = b.Inconsistent,
                    Persistent = b.Persistent,
                    Granularity = b.Granularity,
                    DirtyBytes = b.Count,
                    // Every checkpoint bitmap of this driver records all the time; one that does not was disabled by
                    // someone else and has missed writes.
                    Usable = !b.Inconsistent && b.Recording,
                    Problem = b.Inconsistent
                        ? "inconsistent: the image was not closed cleanly while the bitmap was in use"
                        : b.Recording ? null : "not recording: writes since it was disabled are missing",
                })],
            });
        }

        return health;
    }

    private static IEnumerable<CheckpointInfo> Checkpoints(QemuDomain domain, IReadOnlyList<QemuBlockNode> nodes)
    {
        var byName = new Dictionary<string, List<CheckpointDisk>>(StringComparer.Ordinal);
        foreach (var disk in domain.Options.Disks)
        {
            foreach (var bitmap in Node(nodes, disk)?.Bitmaps ?? [])
            {
                if (bitmap.Persistent && !CaptureNames.TryParse(bitmap.Name, out _, out _))
                {
                    if (!byName.TryGetValue(bitmap.Name, out var disks))
                    {
                        byName[bitmap.Name] = disks = [];
                    }

                    disks.Add(new CheckpointDisk(disk.Target, bitmap.Name));
                }
            }
        }

        return byName.Select(pair => new CheckpointInfo
        {
            Name = pair.Key,
            DomainId = domain.Id,
            CreatedAt = CreatedAt(pair.Key),
            Disks = pair.Value,
            HasMetadata = false,
        });
    }

    /// <summary>The creation time encoded in a Drydock checkpoint name (<see cref="DrydockNames.NewCheckpointName"/>).</summary>
    private static DateTimeOffset? CreatedAt(string name) =>
        DrydockNames.IsOwned(name) && name.Length >= DrydockNames.Prefix.Length + 16
        && DateTimeOffset.TryParseExact(name.AsSpan(DrydockNames.Prefix.Length, 16), "yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at)
            ? at
            : null;

    private static QemuBlockNode? Node(IReadOnlyList<QemuBlockNode> nodes, QemuDiskOptions disk) =>
        nodes.FirstOrDefault(n => n.NodeName == disk.NodeName);

    private static List<QemuDiskOptions> SelectDisks(QemuDomain domain, IReadOnlyList<string>? targets) =>
        targets is null
            ? [.. domain.Options.Disks]
            : [.. targets.Select(t => domain.Options.Disks.FirstOrDefault(d => d.Target == t) ?? throw new DiskNotFoundException(domain.Id, t))];

    private async Task<IReadOnlyList<QemuBlockNode>> QueryAsync(QemuDomain domain, QmpClient qmp, string operation, CancellationToken cancellationToken)
    {
        try
        {
            return await qmp.QueryNamedBlockNodesAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
        {
            throw Translate(ex, domain.Id, operation);
        }
    }
}
