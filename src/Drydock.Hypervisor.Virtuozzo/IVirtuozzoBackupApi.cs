namespace Drydock.Hypervisor.Virtuozzo;

/// <summary>Where one exported disk is served, as the backend reports it after <c>virDomainBlockExportXStart</c>.</summary>
/// <param name="Disk">The export XML's disk name (target).</param>
/// <param name="Endpoint">The NBD endpoint with the export name.</param>
/// <param name="DirtyBitmapContext">The NBD metadata context of the changed blocks, when a checkpoint was exported.</param>
/// <param name="Granularity">Bytes per bit of that bitmap, when known.</param>
public sealed record VzExportEndpoint(string Disk, Drydock.Nbd.NbdUri Endpoint, string? DirtyBitmapContext, long? Granularity);

/// <summary>A domain as the Virtuozzo backend reports it.</summary>
/// <param name="Uuid">The UUID.</param>
/// <param name="Name">The name.</param>
/// <param name="State">Its run state.</param>
/// <param name="Xml">The live domain XML (with <c>x-checkpoint</c>/<c>x-blockexport</c> elements on Virtuozzo).</param>
/// <param name="DiskSizes">Per target, the virtual size in bytes.</param>
public sealed record VirtuozzoDomain(string Uuid, string Name, DomainState State, string Xml, IReadOnlyDictionary<string, ulong> DiskSizes);

/// <summary>
/// The Virtuozzo X API, one call per method, so that <see cref="VirtuozzoDriver"/> runs unchanged over the real
/// libvirt of Virtuozzo Hybrid Server (<see cref="NativeVirtuozzoBackupApi"/>) or over an adapter (the interop tests map
/// it onto the QEMU driver's equivalent operations).
/// </summary>
public interface IVirtuozzoBackupApi : IAsyncDisposable
{
    /// <summary>The host's name.</summary>
    string HostName { get; }

    /// <summary>Every domain.</summary>
    Task<IReadOnlyList<VirtuozzoDomain>> ListDomainsAsync(CancellationToken cancellationToken = default);

    /// <summary>One domain by UUID or name.</summary>
    /// <exception cref="DomainNotFoundException">No such domain.</exception>
    Task<VirtuozzoDomain> GetDomainAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary><c>virDomainBlockSnapshotXCreateXML</c>: returns the snapshot's name.</summary>
    /// <param name="domainId">The domain.</param>
    /// <param name="snapshotXml">A <c>&lt;domainblocksnapshot&gt;</c>.</param>
    /// <param name="createCheckpoint">Also create a checkpoint named after the snapshot (the create flag).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    Task<string> CreateBlockSnapshotAsync(string domainId, string snapshotXml, bool createCheckpoint, CancellationToken cancellationToken = default);

    /// <summary><c>virDomainBlockSnapshotXLookupByName</c> + <c>virDomainBlockSnapshotXDelete</c>; false when it does not exist.</summary>
    Task<bool> DeleteBlockSnapshotAsync(string domainId, string snapshot, CancellationToken cancellationToken = default);

    /// <summary>The names of the domain's block snapshots (<c>XList</c>).</summary>
    Task<IReadOnlyList<string>> ListBlockSnapshotsAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary><c>virDomainBlockSnapshotXGetXMLDesc</c> of a snapshot.</summary>
    Task<string> GetBlockSnapshotXmlAsync(string domainId, string snapshot, CancellationToken cancellationToken = default);

    /// <summary>
    /// <c>virDomainBlockExportXStart</c>, then the endpoints as the domain XML reports them (the introspected export
    /// names of <c>x-blockexport</c>).
    /// </summary>
    Task<IReadOnlyList<VzExportEndpoint>> StartExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default);

    /// <summary><c>virDomainBlockExportXStop</c>.</summary>
    Task StopExportAsync(string domainId, string exportXml, CancellationToken cancellationToken = default);

    /// <summary><c>virDomainBlockCheckpointXRemove</c>.</summary>
    Task RemoveCheckpointAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default);

    /// <summary>Starts the domain, optionally paused.</summary>
    Task StartAsync(string domainId, bool paused, CancellationToken cancellationToken = default);

    /// <summary>Resumes a paused domain.</summary>
    Task ResumeAsync(string domainId, CancellationToken cancellationToken = default);

    /// <summary>Powers the domain off.</summary>
    Task DestroyAsync(string domainId, CancellationToken cancellationToken = default);
}
