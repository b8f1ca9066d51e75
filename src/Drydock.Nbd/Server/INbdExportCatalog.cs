namespace Drydock.Nbd.Server;

/// <summary>What a connection needs from its server: the exports, looked up at the moment a client asks.</summary>
internal interface INbdExportCatalog
{
    /// <summary>The exports, in the order they were added.</summary>
    IReadOnlyList<NbdExport> Exports { get; }

    /// <summary>Finds an export by name.</summary>
    /// <param name="name">The export name.</param>
    /// <returns>The export, or null.</returns>
    NbdExport? FindExport(string name);
}
