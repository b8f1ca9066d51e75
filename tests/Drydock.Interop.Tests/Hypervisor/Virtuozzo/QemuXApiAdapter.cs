using System.Collections.Concurrent;
using System.Security;
using System.Text;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Virtuozzo;
using Drydock.Hypervisor.Virtuozzo.Xml;

namespace Drydock.Interop.Tests.Hypervisor.Virtuozzo;

/// <summary>
/// The Virtuozzo X API mapped onto the QEMU driver's equivalent operations (issue 3, point 4), so that
/// <see cref="VirtuozzoDriver"/>'s flows run against real QEMU (qemu-storage-daemon) without a Virtuozzo host:
/// block snapshot → remembered, taken when the export starts (a capture: copy-before-write + snapshot-access, the same
/// mechanism); export start → capture begin (base = the export's checkpoint, new checkpoint = the snapshot's id) or, for
/// a writable export of the live disks, a restore export; export stop → nothing or close the restore export; snapshot
/// delete → release (committed); checkpoint remove → checkpoint delete; the domain XML is synthesized with the
/// <c>x-checkpoint</c> and <c>x-blockexport</c> elements the driver reads.
/// </summary>
internal sealed class QemuXApiAdapter(IHypervisorDriver qemu) : IVirtuozzoBackupApi
{
    private readonly ConcurrentDictionary<string, Snapshot> _snapshots = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _restores = new(StringComparer.Ordinal);

    /// <summary>Every X call made, in order (what the flow looked like).</summary>
    public List<string> Calls { get; } = [];

    public string HostName => qemu.HostName;

    public async Task<IReadOnlyList<VirtuozzoDomain>> ListDomainsAsync(CancellationToken cancellationToken = default) =>
        [.. await Task.WhenAll((await qemu.ListDomainsAsync(cancellationToken)).Select(d => GetDomainAsync(d.Id, cancellationToken)))];

    public async Task<VirtuozzoDomain> GetDomainAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = await qemu.GetDomainAsync(domainId, cancellationToken);
        // The QEMU driver reads checkpoints from a running instance's bitmaps; a stopped one reports none here.
        IReadOnlyList<CheckpointInfo> checkpoints = domain.State is DomainState.Running or DomainState.Paused
            ? await qemu.ListCheckpointsAsync(domainId, cancellationToken)
            : [];
        var xml = new StringBuilder($"<domain type='kvm'><name>{SecurityElement.Escape(domain.Name)}</name><uuid>{SecurityElement.Escape(domain.Id)}</uuid><devices>");
        foreach (var disk in domain.Disks)
        {
            xml.Append($"<disk type='file' device='disk'><driver name='qemu' type='{disk.Format}'/><source file='{SecurityElement.Escape(disk.Source)}'/><target dev='{disk.Target}'/>");
            foreach (var checkpoint in checkpoints.Where(c => c.Disks.Any(d => d.Target == disk.Target)))
            {
                xml.Append($"<x-checkpoint name='{checkpoint.Name}'/>");
            }

            foreach (var snapshot in _snapshots.Values.Where(s => s.Capture is not null && s.Exported))
            {
                if (snapshot.Capture!.Disks.FirstOrDefault(d => d.Target == disk.Target) is { } captured)
                {
                    xml.Append($"<x-blockexport exportname='{SecurityElement.Escape(captured.ExportName)}' snapshot='{snapshot.Name}'{(captured.SinceCheckpoint is { } since ? $" checkpoint='{since}'" : string.Empty)}/>");
                }
            }

            xml.Append("</disk>");
        }

        xml.Append("</devices></domain>");
        return new VirtuozzoDomain(domain.Id, domain.Name, domain.State, xml.ToString(), domain.Disks.ToDictionary(d => d.Target, d => d.VirtualSize));
    }

    public Task<string> CreateBlockSnapshotAsync(string domainId, string snapshotXml, bool createCheckpoint, CancellationToken cancellationToken = default)
    {
        Record("virDomainBlockSnapshotXCreateXML");
        var document = BlockSnapshotXml.Parse(snapshotXml);
        var name = document.Name ?? DrydockNames.Prefix + DrydockNames.RandomSuffix();
        if (!_snapshots.TryAdd(name, new Snapshot(name, domainId, snapshotXml, createCheckpoint)))
        {
            throw new CheckpointExistsException(domainId, name);
        }

        return Task.FromResult(name);
    }

    public async Task<bool> DeleteBlockSnapshotAsync(string domainId, string snapshot, CancellationToken cancellationToken = default)
    {
        Record("virDomainBlockSnapshotXDelete");
        if (!_snapshots.TryRemove(snapshot, out var state))
        {
            return false;
        }

        if (state.Capture is { } capture)
        {
            await qemu.ReleaseCaptureAsync(domainId, capture.Id, CaptureOutcome.Committed, cancellationToken);
        }
        else if (state.CreateCheckpoint)
        {
            // A snapshot deleted before any export still leaves its checkpoint behind, as on Virtuozzo.
            await qemu.CreateCheckpointAsync(domainId, snapshot, [.. BlockSnapshotXml.Parse(state.Xml).Disks.Select(d => d.Name)], cancellationToken);
        }

        return true;
    }

    public Task<IReadOnlyList<string>> ListBlockSnapshotsAsync(string domainId, CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<string>>([.. _snapshots.Values.Where(s => s.DomainId == domainId).Select(s => s.Name)]);

    public Task<string> GetBlockSnapshotXmlAsync(string domainId, string snapshot, CancellationToken cancellationToken = default) =>
        Task.FromResult(_snapshots.TryGetValue(snapshot, out var state) ? state.Xml : throw new CheckpointNotFoundException(domainId, snapshot));

    public async Task<IReadOnlyList<VzExportEndpoint>> StartExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default)
    {
        Record("virDomainBlockExportXStart");
        var export = BlockExportXml.Parse(exportXml);
        if (export.Disks.All(d => d.Snapshot is null && d.ReadOnly == false))
        {
            var restore = await qemu.OpenRestoreExportAsync(domainId, [.. export.Disks.Select(d => d.Name)], cancellationToken);
            _restores[exportXml] = restore.Id;
            return [.. restore.Disks.Select(d => new VzExportEndpoint(d.Target, d.Endpoint, null, null))];
        }

        var snapshot = _snapshots[export.Disks[0].Snapshot!];
        snapshot.Capture ??= await qemu.BeginCaptureAsync(new CaptureRequest
        {
            DomainId = domainId,
            Disks = [.. export.Disks.Select(d => new CaptureDiskRequest(d.Name, d.Checkpoint))],
            NewCheckpoint = snapshot.CreateCheckpoint ? snapshot.Name : null,
        }, cancellationToken);
        snapshot.Exported = true;
        return [.. snapshot.Capture.Disks.Select(d => new VzExportEndpoint(d.Target, d.Endpoint, d.ChangedBlocksContext, d.Granularity))];
    }

    public async Task StopExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default)
    {
        Record("virDomainBlockExportXStop");
        if (_restores.TryRemove(exportXml, out var restore))
        {
            await qemu.CloseRestoreExportAsync(domainId, restore, cancellationToken);
            return;
        }

        foreach (var disk in BlockExportXml.Parse(exportXml).Disks)
        {
            if (disk.Snapshot is { } name && _snapshots.TryGetValue(name, out var snapshot))
            {
                snapshot.Exported = false;
            }
        }
    }

    public async Task RemoveCheckpointAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default)
    {
        Record("virDomainBlockCheckpointXRemove");
        await qemu.DeleteCheckpointAsync(domainId, checkpoint, CheckpointDeleteMode.All, cancellationToken);
    }

    public Task StartAsync(string domainId, bool paused, CancellationToken cancellationToken = default) => qemu.StartAsync(domainId, paused, cancellationToken);

    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) => qemu.ResumeAsync(domainId, cancellationToken);

    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) => qemu.DestroyAsync(domainId, cancellationToken);

    // The QEMU driver belongs to the test's domain, which disposes it.
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private void Record(string call)
    {
        lock (Calls)
        {
            Calls.Add(call);
        }
    }

    private sealed class Snapshot(string name, string domainId, string xml, bool createCheckpoint)
    {
        public string Name { get; } = name;

        public string DomainId { get; } = domainId;

        public string Xml { get; } = xml;

        public bool CreateCheckpoint { get; } = createCheckpoint;

        public Capture? Capture { get; set; }

        public bool Exported { get; set; }
    }
}
