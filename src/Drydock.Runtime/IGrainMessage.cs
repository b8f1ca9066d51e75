namespace Drydock.Runtime;

/// <summary>
/// A message or effect payload that can be stored: it carries a stable type name and a version, so
/// renaming the CLR type never breaks rows already in the inbox or the work queue.
/// </summary>
public interface IGrainMessage
{
    /// <summary>The stable name stored with every row, e.g. <c>drydock.job.start</c>. Never change it.</summary>
    static abstract string TypeName { get; }

    /// <summary>The version of the JSON shape; raise it when the shape changes and register an upgrade.</summary>
    static abstract int TypeVersion { get; }
}

/// <summary>
/// A grain's durable state: a stable type name and a schema version stored beside the JSON, so an older
/// row can be upgraded when the state shape changes.
/// </summary>
public interface IGrainState
{
    /// <summary>The stable name stored with the state, e.g. <c>drydock.job.state</c>.</summary>
    static abstract string TypeName { get; }

    /// <summary>The schema version of the JSON shape written by this binary.</summary>
    static abstract int SchemaVersion { get; }
}
