package com.google.j2objc.annotations;

/** Compile-time stand-in for j2objc-annotations (not packaged by Debian); no effect on the JVM. */
@java.lang.annotation.Retention(java.lang.annotation.RetentionPolicy.CLASS)
public @interface ReflectionSupport {
    Level value();

    /** The reflection support levels. */
    enum Level { NATIVE_ONLY, FULL }
}
